package tokenize

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"github.com/ktoloader/ktoloader/loader"
)

// Tool-call ids. Mistral v0.3's template refuses any id whose length is not 9 (its message
// says "alphanumeric strings with length 9"), and Mistral's own ids are 9 random letters and
// digits. Real logs carry OpenAI ids ("call_" + 24 characters), short ones ("call_060"), none at
// all, and reuse one id for different calls in a row (tau-bench: 71 times). The model only
// needs the ids to pair a call with its result, so ids that are not 9 ASCII letters or digits
// are replaced here before rendering.
//
// The replacement depends only on the original id and on the call's position among the row's
// tool calls (and, for a tool result that answers no earlier call, on the result's position),
// never on the file name or line: two rows that share a conversation prefix (a KTO pair) get
// the same prompt, so grouping and splitting by prompt keep working.

// IDLength is the length of a tool-call id as the template demands it.
const IDLength = 9

// ValidToolCallID reports whether id is kept as is: exactly 9 ASCII letters or digits.
func ValidToolCallID(id string) bool {
	if len(id) != IDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// RepairIDs returns msgs with every tool-call id that ValidToolCallID refuses replaced by a
// deterministic 9-character alphanumeric id, and the tool_call_id of each tool message mapped
// the same way: a tool message refers to the latest earlier call that carried its original id
// (so an id reused for several calls pairs each result with the call just before it). A tool
// message whose id matches no earlier call keeps a valid id and gets a fresh one otherwise.
// repaired counts the new ids made: one per tool call whose id was replaced, plus one per
// tool message that answers no earlier call and had to be given one (a result that follows
// its call's new id is not counted again). msgs is not modified; the result shares unchanged
// messages' slices with it.
func RepairIDs(msgs []loader.Message) (out []loader.Message, repaired int) {
	out = msgs
	copied := false
	own := func() {
		if !copied {
			out = append([]loader.Message(nil), msgs...)
			copied = true
		}
	}
	latest := make(map[string]string) // original id -> id of the latest call that carried it
	used := make(map[string]bool)     // ids given out so far, so a new id never repeats one
	ordinal := 0                      // position of the call among the row's tool calls
	for i := range msgs {
		m := &msgs[i]
		if len(m.ToolCalls) > 0 {
			var calls []loader.ToolCall
			for j := range m.ToolCalls {
				orig := m.ToolCalls[j].ID
				id := orig
				if !ValidToolCallID(orig) {
					id = newID(used, "call", ordinal, orig)
					if calls == nil {
						calls = append([]loader.ToolCall(nil), m.ToolCalls...)
					}
					calls[j].ID = id
					repaired++
				}
				used[id] = true
				latest[orig] = id
				ordinal++
			}
			if calls != nil {
				own()
				out[i].ToolCalls = calls
			}
		}
		if m.Role == "tool" || m.Role == "tool_results" {
			orig := m.ToolCallID
			id, ok := latest[orig]
			if !ok {
				id = orig
				if !ValidToolCallID(orig) {
					id = newID(used, "result", i, orig)
					repaired++
				}
			}
			if id != orig {
				own()
				out[i].ToolCallID = id
			}
		}
	}
	return out, repaired
}

// newID derives a 9-character alphanumeric id from (kind, position, original id): the first
// 8 bytes of a SHA-256 written as 9 base-62 digits. Should it repeat an id already given out in
// the row (odds about 1e-16 per pair), the next salt is tried.
func newID(used map[string]bool, kind string, pos int, orig string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	for salt := 0; ; salt++ {
		h := sha256.New()
		h.Write([]byte("ktoloader tool-call id\x00" + kind + "\x00" + strconv.Itoa(pos) + "\x00" + strconv.Itoa(salt) + "\x00"))
		h.Write([]byte(orig))
		var sum [sha256.Size]byte
		n := binary.BigEndian.Uint64(h.Sum(sum[:0]))
		var id [IDLength]byte
		for k := range id {
			id[k] = alphabet[n%62]
			n /= 62
		}
		s := string(id[:])
		if !used[s] {
			return s
		}
	}
}
