// Package gen writes synthetic input shaped like the Nexus KTO file (shared/data/nexus), for
// benchmarks and scale tests (`ktoloader gen`): nothing of the real text is copied, every
// word comes from the lists below, but the shapes are measured from the real file (4,572
// rows):
//
//   - 90% of rows are system + user + assistant, 10% user + assistant; 1 in 2,000 has no
//     final assistant message (the real file has 2 such rows), so rejects are exercised.
//   - System prompts repeat their template text (a <session_context> block with session
//     and workspace ids, ~280 or ~590 bytes) but carry fresh ids, so most are unique.
//   - Half the prompts come as KTO pairs (one desirable and one undesirable completion of
//     the same prompt), half alone; labels alternate, so they are 1:1.
//   - Completions: 68% tool calls (1% of them two calls, 4% with text beside them), 32% text
//     (markdown-ish, median ~480 bytes). Arguments are JSON strings (82% with ", "/": "
//     separators, 18% compact; 0.5% given as objects) holding a context object and typed
//     parameters; a long `content` parameter makes the tail (p99 ~2.5 KB).
//   - Tool-call ids take the shapes seen in the wild: 9 letters and digits (56%), "call_" +
//     24 characters, "call_" + a tag and digits, "toolu_" ids, short ones, none at all.
//   - 12 behaviors weighted as in the real metadata; the response_patterns ones carry only
//     `pattern` (so prep's behavior fallback runs), some rows also `category`.
//
// Lengths are drawn log-normal with the real file's log-mean and log-spread per field. Row
// i is a function of (seed, i's predecessors) only: same rows and seed, same bytes.
//
// It imports only the standard library, internal/stablehash (its random stream) and
// internal/jsonstr (its string quoting): it writes JSON text, and loader (which reads it) is
// what its tests check it against.
package gen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
	"github.com/ktoloader/ktoloader/internal/stablehash"
)

// Write writes n rows to w, streaming in constant memory.
func Write(w io.Writer, n int64, seed uint64) error {
	g := newSynth(seed)
	var buf []byte
	for g.row < n {
		buf = g.appendGroup(buf[:0], n-g.row)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// synth is the generator's state: the random stream and the label alternation.
type synth struct {
	r     splitmix
	row   int64
	label bool // label of the next row
}

func newSynth(seed uint64) *synth {
	return &synth{r: splitmix{stablehash.NewRNG(seed * stablehash.Gamma)}, label: true}
}

// splitmix is SplitMix64 (internal/stablehash, so the bytes do not depend on the Go
// release) with the generator's own draws.
type splitmix struct{ stablehash.RNG }

func (r *splitmix) u64() uint64 { return r.Uint64() }

// intn is uniform in [0, n) up to a bias of n/2^64, irrelevant here.
func (r *splitmix) intn(n int) int { return int(r.u64() % uint64(n)) }

// p is true with probability x.
func (r *splitmix) p(x float64) bool { return r.float() < x }

func (r *splitmix) float() float64 { return float64(r.u64()>>11) / (1 << 53) }

// logNormal draws exp(N(mu, sigma)) by Box–Muller, clipped to [lo, hi].
func (r *splitmix) logNormal(mu, sigma float64, lo, hi int) int {
	u1 := max(r.float(), 1e-12)
	z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*r.float())
	return min(max(int(math.Exp(mu+sigma*z)), lo), hi)
}

func pick[T any](r *splitmix, xs []T) T { return xs[r.intn(len(xs))] }

// behavior is one behavior with its weight (rows in the real metadata) and how it is named.
type behavior struct {
	name     string
	weight   int
	patterns []string // pattern values; for patternOnly behaviors the only name the row carries
	only     bool     // the row carries `pattern` and no `behavior`
}

var behaviors = []behavior{
	{"error_recovery", 592, []string{"text_explain_recovery", "text_explain_error"}, false},
	{"workspace_awareness", 544, []string{"text_maintain_context", "leverage_session_memory"}, false},
	{"intellectual_humility", 650, []string{"text_admit_ignorance", "text_clarify_ambiguous"}, false},
	{"strategic_tool_selection", 534, []string{"efficient_search", "wasteful_full_read"}, false},
	{"execute_prompt_usage", 306, []string{"good_prompt_structure", "poor_prompt_structure"}, false},
	{"verification_before_action", 628, []string{"text_confirm_scope", "text_warn_consequences"}, false},
	{"context_continuity", 502, []string{"text_reference_prior", "text_summarize_completed"}, false},
	{"context_efficiency", 266, []string{"line_based_reading", "wasteful_rereading"}, false},
	{"ask_first", 100, []string{"ask_first"}, false},
	{"text_only", 150, []string{"text_only"}, true},
	{"tool_only", 150, []string{"tool_only"}, true},
	{"tool_text", 150, []string{"tool_text"}, true},
}

var behaviorTotal = func() int {
	n := 0
	for _, b := range behaviors {
		n += b.weight
	}
	return n
}()

func (r *splitmix) behavior() *behavior {
	x := r.intn(behaviorTotal)
	for i := range behaviors {
		if x < behaviors[i].weight {
			return &behaviors[i]
		}
		x -= behaviors[i].weight
	}
	return &behaviors[len(behaviors)-1]
}

// Word lists: invented for this generator.
var (
	words = []string{
		"the", "a", "my", "your", "this", "that", "notes", "note", "folder", "project", "meeting",
		"draft", "plan", "summary", "budget", "report", "ideas", "tasks", "list", "file", "page",
		"week", "month", "review", "update", "changes", "section", "table", "links", "tags",
		"archive", "inbox", "journal", "reading", "research", "outline", "schedule", "client",
		"team", "roadmap", "release", "design", "spec", "bug", "feature", "workspace", "vault",
		"template", "daily", "weekly", "quarterly", "old", "new", "recent", "important", "shared",
		"personal", "about", "for", "with", "from", "into", "under", "before", "after", "and",
		"or", "all", "some", "every", "two", "three", "first", "last", "next", "only", "still",
		"please", "quickly", "again", "also", "then", "now", "later", "here", "there", "it",
		"them", "is", "are", "was", "be", "have", "has", "should", "could", "would", "will",
		"can", "need", "want", "keep", "move", "find", "open", "read", "write", "delete",
		"rename", "merge", "split", "check", "compare", "organize", "clean", "sort", "summarize",
		"search", "create", "add", "remove", "replace", "fix", "confirm", "verify", "load",
	}
	exotic = []string{
		"café", "naïve", "Müller", "Straße", "résumé", "東京", "会议记录", "日本語のメモ", "Ελληνικά",
		"русский", "한국어", "año", "smørrebrød", "→", "✓", "½", "“quoted”", "emoji 🎉",
	}
	agents = []string{"vaultLibrarian", "contentManager", "vaultManager", "memoryManager", "agentManager"}
	modes  = []string{
		"search", "searchContent", "searchDirectory", "searchMemory", "readContent", "createContent",
		"appendContent", "prependContent", "replaceContent", "deleteContent", "batchContent",
		"createFolder", "deleteFolder", "moveFolder", "listDirectory", "moveNote", "deleteNote",
		"duplicateNote", "openNote", "loadWorkspace", "createWorkspace", "listWorkspaces",
		"createSession", "loadSession", "createState", "executePrompt", "listModels",
	}
	wsNames  = []string{"Main Workspace", "Research", "Work Projects", "Personal", "Writing", "Archive", "Team Notes"}
	wsDescr  = []string{"General workspace for all vault operations", "Papers, reading notes and drafts", "Client work and planning", "Journal and home admin", "Long-form writing and outlines"}
	sysDescr = []string{"Answering a question about past decisions", "Organizing project notes", "Cleaning up the inbox", "Planning the next release", "Reviewing meeting notes", "Fixing a broken link"}
	sysMem   = []string{"New session; no earlier actions.", "Earlier: listed the folder and read two notes.", "The user asked to keep the originals.", "A previous move failed because the folder did not exist."}
	exts     = []string{".md", ".md", ".md", ".canvas", ".pdf", ".png"}
	searchTy = []string{"content", "files", "folders", "tags"}
	heads    = []string{"Summary", "Next steps", "Why this happens", "Options", "What I found", "Plan"}
	alnum    = "abcdefghijklmnopqrstuvwxyz0123456789"
	alnumAll = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// appendGroup appends one prompt's rows (one, or a desirable/undesirable pair), at most left.
func (g *synth) appendGroup(b []byte, left int64) []byte {
	r := &g.r
	beh := r.behavior()
	pat := pick(r, beh.patterns)
	category := ""
	if r.p(0.04) {
		category = pick(r, []string{"deletion", "move", "modification", "architecture_design"})
	}
	withPattern := beh.only || r.p(0.5)
	// The prompt, as JSON message objects, shared by the rows of the group.
	var prompt []byte
	var ctx *toolContext
	if r.p(0.9) {
		var sys string
		sys, ctx = g.system()
		prompt = appendMsg(prompt, "system", sys)
		prompt = append(prompt, ", "...)
	}
	prompt = appendMsg(prompt, "user", g.sentence(r.logNormal(3.85, 0.63, 8, 600), true))

	n := int64(1)
	if left >= 2 && r.p(0.5) {
		n = 2
	}
	for k := int64(0); k < n; k++ {
		b = append(b, `{"conversations": [`...)
		b = append(b, prompt...)
		if r.intn(2000) != 0 {
			b = append(b, ", "...)
			b = g.completion(b, beh, ctx)
		}
		b = append(b, `], "label": `...)
		b = strconv.AppendBool(b, g.label)
		if !beh.only {
			b = append(b, `, "behavior": `...)
			b = appendStr(b, beh.name)
		}
		if withPattern {
			b = append(b, `, "pattern": `...)
			b = appendStr(b, pat)
		}
		if category != "" {
			b = append(b, `, "category": `...)
			b = appendStr(b, category)
		}
		b = append(b, "}\n"...)
		g.label = !g.label
		g.row++
	}
	return b
}

// toolContext is what a system prompt tells the model to pass in every call.
type toolContext struct{ session, workspace string }

func (g *synth) system() (string, *toolContext) {
	r := &g.r
	ts := strconv.FormatInt(1732000000000+int64(r.intn(40_000_000_000)), 10)
	ctx := &toolContext{session: "session_" + ts + "_" + g.token(alnum, 9), workspace: "ws_" + ts + "_" + g.token(alnum, 9)}
	if r.p(0.45) {
		return "<session_context>\n<sessionId>" + ctx.session + "</sessionId>\n<workspaceId>" + ctx.workspace +
			"</workspaceId>\n<sessionDescription>" + pick(r, sysDescr) + "</sessionDescription>\n<sessionMemory>" +
			pick(r, sysMem) + "</sessionMemory>\n</session_context>", ctx
	}
	s := "<session_context>\nIMPORTANT: When using tools, include these values in your tool call parameters:\n\n" +
		"- sessionId: \"" + ctx.session + "\"\n- workspaceId: \"" + ctx.workspace + "\" (current workspace)\n\n" +
		"Include these in the \"context\" parameter of your tool calls.\n</session_context>\n<available_workspaces>\n" +
		"The following workspaces are available in this vault:\n\n"
	for i, n := 0, 1+r.intn(2); i < n; i++ {
		id := ctx.workspace
		if i > 0 {
			id = "ws_" + ts + "_" + g.token(alnum, 9)
		}
		s += "- " + pick(r, wsNames) + " (id: \"" + id + "\")\n  Description: " + pick(r, wsDescr) +
			"\n  Root folder: " + pick(r, []string{"/", "Projects/", "Notes/", "Work/"}) + "\n\n"
	}
	s += "Use memoryManager with loadWorkspace mode to get full workspace context.\n</available_workspaces>"
	return s, ctx
}

// completion appends the final assistant message.
func (g *synth) completion(b []byte, beh *behavior, ctx *toolContext) []byte {
	r := &g.r
	tools := r.p(0.68)
	switch beh.name {
	case "text_only":
		tools = false
	case "tool_only", "tool_text":
		tools = true
	}
	if !tools {
		return appendMsg(b, "assistant", g.answer(r.logNormal(6.13, 0.61, 20, 4000)))
	}
	b = append(b, `{"role": "assistant", "content": `...)
	if beh.name == "tool_text" || r.p(0.04) {
		b = appendStr(b, g.sentence(r.logNormal(4.8, 0.5, 20, 400), false))
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `, "tool_calls": [`...)
	for i, n := 0, 1+btoi(r.p(0.01)); i < n; i++ {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = g.toolCall(b, ctx)
	}
	return append(b, "]}"...)
}

func btoi(x bool) int {
	if x {
		return 1
	}
	return 0
}

// toolCall appends one tool call; its id takes one of the shapes real logs have.
func (g *synth) toolCall(b []byte, ctx *toolContext) []byte {
	r := &g.r
	b = append(b, '{')
	switch x := r.intn(100); {
	case x < 56:
		b = append(b, `"id": `...)
		b = appendStr(b, g.token(alnum, 9))
	case x < 66:
		b = append(b, `"id": `...)
		b = appendStr(b, "call_"+g.token(alnumAll, 24))
	case x < 84:
		b = append(b, `"id": `...)
		b = appendStr(b, "call_"+pick(r, []string{"err", "ctx", "stsbch", "wsaw", "vba"})+strconv.Itoa(r.intn(100))+"_"+fmt.Sprintf("%03d", r.intn(1000)))
	case x < 90:
		b = append(b, `"id": `...)
		b = appendStr(b, "toolu_"+g.token(alnumAll, 12))
	case x < 98:
		b = append(b, `"id": `...)
		b = appendStr(b, pick(r, []string{"neg", "pos", "t"})+fmt.Sprintf("%03d", r.intn(1000)))
	} // else no id at all
	if b[len(b)-1] != '{' {
		b = append(b, ", "...)
	}
	if r.p(0.99) {
		b = append(b, `"type": "function", `...)
	}
	b = append(b, `"function": {"name": `...)
	b = appendStr(b, pick(r, agents)+"_"+pick(r, modes))
	b = append(b, `, "arguments": `...)
	args := g.arguments(ctx)
	if r.p(0.005) {
		b = append(b, args...) // an object, not a string: some exports do this
	} else {
		b = appendStr(b, string(args))
	}
	return append(b, "}}"...)
}

// arguments returns a tool call's arguments object as JSON text.
func (g *synth) arguments(ctx *toolContext) []byte {
	r := &g.r
	sep, colon := ", ", ": "
	if r.p(0.18) {
		sep, colon = ",", ":"
	}
	var a []byte
	a = append(a, '{')
	key := func(k string) {
		if len(a) > 1 {
			a = append(a, sep...)
		}
		a = appendStr(a, k)
		a = append(a, colon...)
	}
	if r.p(0.98) {
		key("context")
		a = append(a, '{')
		session, ws := "session_1732"+g.token("0123456789", 9)+"_"+g.token(alnum, 9), "ws_1732"+g.token("0123456789", 9)+"_"+g.token(alnum, 9)
		if ctx != nil {
			session, ws = ctx.session, ctx.workspace
		}
		for i, kv := range [][2]string{
			{"sessionId", session}, {"workspaceId", ws},
			{"sessionDescription", g.sentence(r.logNormal(3.5, 0.4, 10, 80), false)},
			{"sessionMemory", g.sentence(r.logNormal(4.0, 0.6, 10, 240), false)},
			{"toolContext", g.sentence(r.logNormal(3.9, 0.5, 10, 200), false)},
			{"primaryGoal", g.sentence(r.logNormal(3.2, 0.4, 8, 60), false)},
			{"subgoal", g.sentence(r.logNormal(3.0, 0.4, 6, 60), false)},
		} {
			if i > 0 {
				a = append(a, sep...)
			}
			a = appendStr(a, kv[0])
			a = append(a, colon...)
			a = appendStr(a, kv[1])
		}
		a = append(a, '}')
	}
	// 1–4 distinct parameters (a repeated key would test JSON's duplicate rules, not scale).
	kinds := [10]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for i, n := 0, 1+r.intn(4); i < n; i++ {
		j := i + r.intn(len(kinds)-i)
		kinds[i], kinds[j] = kinds[j], kinds[i]
		switch kinds[i] {
		case 0:
			key("filePath")
			a = appendStr(a, g.path())
		case 2:
			key("query")
			a = appendStr(a, g.sentence(r.logNormal(2.8, 0.5, 3, 60), false))
		case 3:
			key("limit")
			a = strconv.AppendInt(a, int64(5*(1+r.intn(20))), 10)
		case 4:
			key("includeContent")
			a = strconv.AppendBool(a, r.p(0.5))
		case 5:
			key("content")
			a = appendStr(a, g.answer(r.logNormal(5.6, 0.9, 20, 6000)))
		case 6:
			key("paths")
			a = append(a, '[')
			for j, m := 0, 1+r.intn(3); j < m; j++ {
				if j > 0 {
					a = append(a, sep...)
				}
				a = appendStr(a, g.path())
			}
			a = append(a, ']')
		case 7:
			key("searchType")
			a = appendStr(a, pick(r, searchTy))
		case 8:
			key("threshold")
			a = strconv.AppendFloat(a, float64(r.intn(100))/100, 'f', -1, 64)
		case 9:
			key("startLine")
			a = strconv.AppendInt(a, int64(1+r.intn(400)), 10)
		}
	}
	return append(a, '}')
}

func (g *synth) path() string {
	r := &g.r
	p := ""
	for i, n := 0, r.intn(3); i < n; i++ {
		p += pick(r, []string{"Projects", "Notes", "Archive", "Daily", "Work", "Research"}) + "/"
	}
	return p + g.word() + "-" + g.word() + pick(r, exts)
}

func (g *synth) token(alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.r.intn(len(alphabet))]
	}
	return string(b)
}

// sentence is about n bytes of words; question ends it with "?" sometimes.
func (g *synth) sentence(n int, question bool) string {
	r := &g.r
	b := make([]byte, 0, n+16)
	for len(b) < n {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		w := g.word()
		if r.p(0.01) {
			w = pick(r, exotic)
		}
		start := len(b)
		b = append(b, w...)
		if start == 0 && b[0] >= 'a' && b[0] <= 'z' {
			b[0] -= 'a' - 'A' // capitalize the first word
		}
	}
	if question && r.p(0.5) {
		return string(b) + "?"
	}
	return string(b) + "."
}

// answer is about n bytes of markdown-ish text: paragraphs, a heading, a numbered list.
func (g *synth) answer(n int) string {
	r := &g.r
	s := ""
	for len(s) < n {
		switch r.intn(4) {
		case 0:
			s += "**" + pick(r, heads) + ":**\n"
		case 1:
			for i, m := 1, 2+r.intn(3); i <= m; i++ {
				s += strconv.Itoa(i) + ". " + g.sentence(r.logNormal(3.6, 0.4, 10, 120), false) + "\n"
			}
			s += "\n"
		default:
			s += g.sentence(r.logNormal(4.6, 0.5, 20, 400), false) + "\n\n"
		}
	}
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}

// The vocabulary: the common words above, then made-up words of one to four syllables,
// drawn Zipf-distributed by rank (s = 1, as in natural text: the 100 most frequent words are
// half the running text). A small vocabulary would let the tokenizer's caches answer almost
// every word and make it look faster than it is on real text; with this one, cold-cache
// encoding speed and bytes per token are close to the real Nexus text's (see the README).
const vocabSize = 40000

var vocab, vocabCDF = func() ([]string, []float64) {
	onsets := []string{"b", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "pr", "qu", "r", "s", "sh", "sl", "sp", "st", "t", "th", "tr", "v", "w", "z"}
	vowels := []string{"a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y"}
	codas := []string{"", "", "", "n", "r", "s", "t", "l", "m", "nd", "ck", "ng", "st", "x"}
	suffixes := []string{"", "", "", "", "s", "ed", "ing", "er", "ly", "tion", "ment", "able"}
	v := append([]string(nil), words...)
	seen := map[string]bool{}
	for _, w := range v {
		seen[w] = true
	}
	r := splitmix{stablehash.NewRNG(0x70c4b)}
	for len(v) < vocabSize {
		w := ""
		for i, n := 0, 1+r.intn(2)+r.intn(2); i < n; i++ {
			w += pick(&r, onsets) + pick(&r, vowels) + pick(&r, codas)
		}
		w += pick(&r, suffixes)
		if !seen[w] {
			seen[w] = true
			v = append(v, w)
		}
	}
	cdf := make([]float64, len(v))
	sum := 0.0
	for i := range v {
		sum += 1 / float64(i+1)
		cdf[i] = sum
	}
	for i := range cdf {
		cdf[i] /= sum
	}
	return v, cdf
}()

// word draws one word of the vocabulary.
func (g *synth) word() string {
	x := g.r.float()
	i, _ := slices.BinarySearch(vocabCDF, x)
	return vocab[min(i, len(vocab)-1)]
}

// appendMsg appends {"role": role, "content": content}.
func appendMsg(b []byte, role, content string) []byte {
	b = append(b, `{"role": `...)
	b = appendStr(b, role)
	b = append(b, `, "content": `...)
	b = appendStr(b, content)
	return append(b, '}')
}

// appendStr appends s as a JSON string as Python's json.dumps(ensure_ascii=False) writes it.
func appendStr(b []byte, s string) []byte { return jsonstr.Append(b, s) }
