package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/pyjson"
)

// ToolSchema is what the report checks a tool call against: the parameter names a tool
// accepts and those it requires.
type ToolSchema struct {
	Name     string
	Params   []string
	Required []string
}

// Schemas maps tool names to their schemas.
type Schemas map[string]*ToolSchema

// LoadSchemas reads a tool schema file in either of two forms:
//
//   - the Nexus form (shared/data/nexus/tool_schemas.json): an object of tool name →
//     {"parameters": [{"name": …, "optional": …}], "required_params": […]};
//   - an OpenAI tools list, as prep's --tools takes: [{"type": "function", "function":
//     {"name": …, "parameters": {"properties": {…}, "required": […]}}}].
//
// Anything else is ErrSchemaFile naming what was wrong.
func LoadSchemas(path string) (Schemas, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseSchemas(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSchemas parses the contents of a tool schema file (see LoadSchemas).
func ParseSchemas(data []byte) (Schemas, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		return parseOpenAITools(data)
	}
	var obj map[string]struct {
		ToolName   string `json:"tool_name"`
		Parameters []struct {
			Name string `json:"name"`
		} `json:"parameters"`
		Required []string `json:"required_params"`
	}
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSchemaFile, err)
	}
	if len(obj) == 0 {
		return nil, fmt.Errorf("%w: no tools", ErrSchemaFile)
	}
	out := Schemas{}
	for key, t := range obj {
		name := t.ToolName
		if name == "" {
			name = key
		}
		ts := &ToolSchema{Name: name, Required: t.Required}
		for _, p := range t.Parameters {
			if p.Name == "" {
				return nil, fmt.Errorf("%w: tool %q: a parameter without a name", ErrSchemaFile, key)
			}
			ts.Params = append(ts.Params, p.Name)
		}
		out[name] = ts
	}
	return out, nil
}

func parseOpenAITools(data []byte) (Schemas, error) {
	var list []struct {
		Function struct {
			Name       string `json:"name"`
			Parameters struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			} `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSchemaFile, err)
	}
	out := Schemas{}
	for i, t := range list {
		f := t.Function
		if f.Name == "" {
			return nil, fmt.Errorf("%w: tools[%d]: no function.name", ErrSchemaFile, i)
		}
		ts := &ToolSchema{Name: f.Name, Required: f.Parameters.Required}
		for p := range f.Parameters.Properties {
			ts.Params = append(ts.Params, p)
		}
		slices.Sort(ts.Params)
		out[f.Name] = ts
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no tools", ErrSchemaFile)
	}
	return out, nil
}

// Problem kinds of a tool call checked against the schemas.
const (
	ProblemUnknownTool  = "unknown_tool"
	ProblemMissingParam = "missing_required"
	ProblemUnknownParam = "unknown_param"
	ProblemBadArguments = "arguments_not_object"
)

// call is one tool call of a completion, as rendered: name and top-level argument keys.
type call struct {
	name string
	keys []string
	obj  bool // arguments is a JSON object
}

// answer is what the report reads from a rendered completion.
type answer struct {
	calls    []call
	toolText bool // text before [TOOL_CALLS]
	parsed   bool // the [TOOL_CALLS] list parsed (false: it did not, or there is none)
}

const (
	toolCallsMark = "[TOOL_CALLS]"
	eosMark       = "</s>"
)

// parseAnswer reads the tool calls from a rendered completion, `[TOOL_CALLS] [{"name": …,
// "arguments": {…}, "id": …}, …]</s>`, optionally preceded by the assistant's text. Text is
// text: a literal "[TOOL_CALLS]" typed in it is skipped because what follows it is not a
// complete call list up to </s>. The caller knows from the ids whether there are calls.
func parseAnswer(completion string) answer {
	body := strings.TrimSuffix(completion, eosMark)
	for off := 0; ; {
		i := strings.Index(body[off:], toolCallsMark)
		if i < 0 {
			return answer{}
		}
		at := off + i
		rest := strings.TrimSpace(body[at+len(toolCallsMark):])
		if calls, ok := renderedCalls(rest); ok {
			return answer{calls: calls, parsed: true, toolText: strings.TrimSpace(body[:at]) != ""}
		}
		off = at + len(toolCallsMark)
	}
}

// renderedCalls reads a call list as the template writes it, with the package it writes it
// with (internal/pyjson; the shards keep only the rendered text, not the loader's parsed
// arguments): a list (or null) of objects (or nulls) with a string (or null) "name" and
// "arguments", whose top-level keys a call keeps when they are an object. Anything else is
// not a call list.
func renderedCalls(text string) ([]call, bool) {
	v, err := pyjson.Parse([]byte(text))
	if err != nil || (v.Kind != pyjson.Array && v.Kind != pyjson.Null) {
		return nil, false
	}
	var calls []call
	for k := range v.Items {
		var c call
		switch it := &v.Items[k]; it.Kind {
		case pyjson.Null:
		case pyjson.Object:
			if n, ok := it.Field("name"); ok && n.Kind != pyjson.Null {
				if n.Kind != pyjson.String {
					return nil, false
				}
				c.name = n.Text
			}
			if a, ok := it.Field("arguments"); ok && a.Kind == pyjson.Object {
				c.keys, c.obj = a.Keys, true
			}
		default:
			return nil, false
		}
		calls = append(calls, c)
	}
	return calls, true
}

// problemKey names one kind of problem with one tool (and parameter).
type problemKey struct{ tool, param, kind string }

// check returns the call's problems against the schemas (nil: none).
func (s Schemas) check(c call) []problemKey {
	ts, ok := s[c.name]
	if !ok {
		return []problemKey{{tool: c.name, kind: ProblemUnknownTool}}
	}
	if !c.obj {
		return []problemKey{{tool: c.name, kind: ProblemBadArguments}}
	}
	var out []problemKey
	for _, r := range ts.Required {
		if !slices.Contains(c.keys, r) {
			out = append(out, problemKey{c.name, r, ProblemMissingParam})
		}
	}
	for _, k := range c.keys {
		if !slices.Contains(ts.Params, k) {
			out = append(out, problemKey{c.name, k, ProblemUnknownParam})
		}
	}
	return out
}

// SchemaReport checks the answers' tool calls against a schema file, per label. A row
// counts once per kind of problem however many of its calls have it.
type SchemaReport struct {
	File  string `json:"file"`
	Tools int    `json:"tools"` // tools the file defines
	// Rows counted per label: all rows, rows whose answer calls a tool, and rows with each
	// kind of problem (or any).
	Rows            export.LabelCounts `json:"rows"`
	WithCalls       export.LabelCounts `json:"rows_with_tool_calls"`
	UnknownTool     export.LabelCounts `json:"rows_unknown_tool"`
	MissingRequired export.LabelCounts `json:"rows_missing_required"`
	UnknownParam    export.LabelCounts `json:"rows_unknown_param"`
	BadArguments    export.LabelCounts `json:"rows_arguments_not_object"`
	AnyProblem      export.LabelCounts `json:"rows_any_problem"`
	// Calls per label: tool calls checked, and those naming a tool not in the file.
	Calls            export.LabelCounts `json:"calls"`
	UnknownToolCalls export.LabelCounts `json:"calls_unknown_tool"`
	// UnknownTools are the tool names not in the file, with the rows that call them.
	UnknownTools []ToolUse `json:"unknown_tools"`
	// Problems per tool, parameter and kind (unknown tools are in UnknownTools), most first.
	Problems []Problem `json:"problems"`
	// Unused are the tools the file defines that no answer calls.
	Unused []string `json:"unused"`
}

// Problem counts the rows with one problem of one tool.
type Problem struct {
	Tool  string             `json:"tool"`
	Param string             `json:"param,omitempty"`
	Kind  string             `json:"kind"`
	Rows  export.LabelCounts `json:"rows"`
}

// ToolUse counts the rows whose answer calls a tool, per label.
type ToolUse struct {
	Name     string             `json:"name"`
	InSchema *bool              `json:"in_schema,omitempty"` // nil without a schema file
	Rows     export.LabelCounts `json:"rows"`
	AUC      float64            `json:"auc"` // of "the answer calls this tool" for the label
}

func total(c export.LabelCounts) int64 { return c.Desirable + c.Undesirable }
