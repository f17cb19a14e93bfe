package tokenize

import (
	"reflect"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
)

func str(s string) *string { return &s }

func call(id, name string) loader.ToolCall {
	return loader.ToolCall{ID: id, Type: "function", Name: name}.WithArguments([]byte(`{}`))
}

func callMsg(calls ...loader.ToolCall) loader.Message {
	return loader.Message{Role: "assistant", ToolCalls: calls}
}

func toolMsg(id, content string) loader.Message {
	return loader.Message{Role: "tool", ToolCallID: id, Content: str(content)}
}

func TestValidToolCallID(t *testing.T) {
	for id, want := range map[string]bool{
		"abcDEF123": true, "000000000": true, "ZZZZZZZZZ": true,
		"": false, "abcDEF12": false, "abcDEF1234": false, "call_1234": false, "abc-EF123": false,
		"abcDEF12é": false, "call_Ab12Cd34Ef56Gh78Ij90Kl12": false,
	} {
		if got := ValidToolCallID(id); got != want {
			t.Errorf("ValidToolCallID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestRepairIDsKeepsValid(t *testing.T) {
	msgs := []loader.Message{
		{Role: "user", Content: str("hi")},
		callMsg(call("abcDEF123", "f"), call("abcDEF124", "g")),
		toolMsg("abcDEF123", "1"), toolMsg("abcDEF124", "2"),
		{Role: "assistant", Content: str("ok")},
	}
	out, n := RepairIDs(msgs)
	if n != 0 {
		t.Errorf("repaired %d valid ids", n)
	}
	if &out[0] != &msgs[0] {
		t.Errorf("RepairIDs copied a conversation that needed no repair")
	}
}

func TestRepairIDs(t *testing.T) {
	orig := []loader.Message{
		{Role: "user", Content: str("hi")},
		callMsg(call("call_Ab12Cd34Ef56Gh78Ij90Kl12", "f"), call("abcDEF123", "g")),
		toolMsg("call_Ab12Cd34Ef56Gh78Ij90Kl12", "1"),
		toolMsg("abcDEF123", "2"),
		callMsg(call("", "h")), // missing id
		toolMsg("", "3"),       // answers the call without an id
		toolMsg("neg036", "4"), // answers nothing earlier
		{Role: "assistant", Content: str("ok")},
	}
	before := clone(orig)
	out, n := RepairIDs(orig)
	if !reflect.DeepEqual(orig, before) {
		t.Fatalf("RepairIDs modified its input")
	}
	if n != 3 {
		t.Errorf("repaired = %d, want 3 (2 calls, 1 tool message answering no call)", n)
	}
	c0, c1, c2 := out[1].ToolCalls[0].ID, out[1].ToolCalls[1].ID, out[4].ToolCalls[0].ID
	for _, id := range []string{c0, c1, c2, out[6].ToolCallID} {
		if !ValidToolCallID(id) {
			t.Errorf("repaired id %q is not 9 alphanumerics", id)
		}
	}
	if c1 != "abcDEF123" {
		t.Errorf("valid id changed to %q", c1)
	}
	if out[2].ToolCallID != c0 || out[3].ToolCallID != c1 || out[5].ToolCallID != c2 {
		t.Errorf("tool messages not mapped to their calls: calls %s %s %s, results %s %s %s",
			c0, c1, c2, out[2].ToolCallID, out[3].ToolCallID, out[5].ToolCallID)
	}
	if len(distinct(c0, c1, c2, out[6].ToolCallID)) != 4 {
		t.Errorf("ids collide: %s %s %s %s", c0, c1, c2, out[6].ToolCallID)
	}

	// Deterministic: the same input gives the same ids.
	again, _ := RepairIDs(before)
	if !reflect.DeepEqual(out, again) {
		t.Errorf("RepairIDs is not deterministic")
	}
}

// TestRepairIDsReuse: tau-bench reuses one id for different calls in a row. Each call gets its
// own id, and each result answers the latest earlier call that carried its original id.
func TestRepairIDsReuse(t *testing.T) {
	const reused = "call_XgNq1H2tsr4WQzyvLvd2cE0A"
	msgs := []loader.Message{
		{Role: "user", Content: str("book it")},
		callMsg(call(reused, "get_user")),
		toolMsg(reused, "user"),
		callMsg(call(reused, "get_reservation")),
		toolMsg(reused, "reservation"),
		toolMsg(reused, "a second result for the same call"),
		callMsg(call(reused, "book")),
		toolMsg(reused, "booked"),
		{Role: "assistant", Content: str("done")},
	}
	out, n := RepairIDs(msgs)
	a, b, c := out[1].ToolCalls[0].ID, out[3].ToolCalls[0].ID, out[6].ToolCalls[0].ID
	if len(distinct(a, b, c)) != 3 {
		t.Fatalf("reused id gave repeated ids: %s %s %s", a, b, c)
	}
	if out[2].ToolCallID != a || out[4].ToolCallID != b || out[5].ToolCallID != b || out[7].ToolCallID != c {
		t.Errorf("results not paired with the latest earlier call: calls %s %s %s, results %s %s %s %s",
			a, b, c, out[2].ToolCallID, out[4].ToolCallID, out[5].ToolCallID, out[7].ToolCallID)
	}
	if n != 3 {
		t.Errorf("repaired = %d, want 3 (one per call; results follow their calls)", n)
	}
}

// TestRepairIDsPrefixStable: ids depend on the conversation up to the call, not on the rest of
// the row or where it came from, so a KTO pair sharing a prompt renders the same prompt.
func TestRepairIDsPrefixStable(t *testing.T) {
	prefix := []loader.Message{
		{Role: "user", Content: str("q")},
		callMsg(call("call_060", "f")),
		toolMsg("call_060", "r"),
	}
	good := append(clone(prefix), callMsg(call("call_061", "g")))
	bad := append(clone(prefix), loader.Message{Role: "assistant", Content: str("no")})
	x, _ := RepairIDs(good)
	y, _ := RepairIDs(bad)
	if !reflect.DeepEqual(x[:3], y[:3]) {
		t.Errorf("same prefix, different ids: %+v vs %+v", x[:3], y[:3])
	}
}

func TestNewIDAvoidsUsed(t *testing.T) {
	used := map[string]bool{}
	first := newID(used, "call", 0, "x")
	used[first] = true
	if second := newID(used, "call", 0, "x"); second == first || !ValidToolCallID(second) {
		t.Errorf("newID returned %q after %q was taken", second, first)
	}
}

func clone(msgs []loader.Message) []loader.Message {
	out := make([]loader.Message, len(msgs))
	for i, m := range msgs {
		out[i] = m
		out[i].ToolCalls = append([]loader.ToolCall(nil), m.ToolCalls...)
	}
	return out
}

func distinct(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}
