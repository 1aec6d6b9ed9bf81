// Command ollama_render renders an Ollama TEMPLATE the way an Ollama server does,
// using only Go's standard library, so that the template-equality tests can compare
// it with the model's Jinja chat template.
//
// It reads one JSON request per line on stdin and writes one JSON answer per line:
//
//	{"template": "...", "system": "default SYSTEM from the Modelfile",
//	 "messages": [{"role": ..., "content": ..., "tool_calls": [...], "tool_call_id": ...}],
//	 "tools": [...], "prompt": "...", "suffix": "...", "date": "2024-07-26"}
//	-> {"output": "..."} or {"error": "..."}
//
// What it mirrors (Ollama's server/routes.go, server/prompt.go, template/template.go):
//   - The Modelfile SYSTEM is prepended as a system message when the request's first
//     message is not a system message (ChatHandler).
//   - collate: consecutive messages of the same role (except "tool") are merged with
//     "\n\n"; all system messages are joined with "\n\n" into .System.
//   - A template that mentions .Messages is executed once with .System, .Messages,
//     .Tools and an empty .Response; otherwise the legacy path executes it once per
//     (system, prompt, response) triple and cuts the last execution at {{ .Response }}.
//   - A generate request with a suffix executes with only .Prompt, .Suffix, .Response.
//   - Parse: missingkey=zero, and {{ .Response }} appended when the template mentions
//     neither .Messages nor .Response.
//   - Messages and tools are converted to Ollama's template-facing types
//     (templateMessage, templateTool): tool-call arguments and tool properties are Go
//     maps, so ranging over them visits keys in sorted order, and printing them
//     gives compact JSON.
//   - Functions json, currentDate, yesterdayDate, toTypeScriptType. The dates come from
//     the request's "date" so the output is reproducible.
//
// Not mirrored: prompt truncation to num_ctx (the test conversations are short), images.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// PropertyType is a JSON-schema "type": one string, or a list of strings.
type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = PropertyType{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	*pt = l
	return nil
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt PropertyType) String() string {
	if len(pt) == 0 {
		return ""
	}
	if len(pt) == 1 {
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

// ToolProperty mirrors api.ToolProperty.
type ToolProperty struct {
	AnyOf       []ToolProperty          `json:"anyOf,omitempty"`
	Type        PropertyType            `json:"type,omitempty"`
	Items       any                     `json:"items,omitempty"`
	Description string                  `json:"description,omitempty"`
	Enum        []any                   `json:"enum,omitempty"`
	Properties  map[string]ToolProperty `json:"properties,omitempty"`
}

// ToTypeScriptType mirrors api.ToolProperty.ToTypeScriptType.
func (tp ToolProperty) ToTypeScriptType() string {
	if len(tp.AnyOf) > 0 {
		var parts []string
		for _, p := range tp.AnyOf {
			parts = append(parts, p.ToTypeScriptType())
		}
		return strings.Join(parts, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var parts []string
	for _, t := range tp.Type {
		parts = append(parts, mapToTypeScriptType(t))
	}
	return strings.Join(parts, " | ")
}

func mapToTypeScriptType(t string) string {
	switch t {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	default:
		return "any"
	}
}

type inTool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string                  `json:"type"`
			Defs       any                     `json:"$defs,omitempty"`
			Items      any                     `json:"items,omitempty"`
			Required   []string                `json:"required,omitempty"`
			Properties map[string]ToolProperty `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type inMessage struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	ToolCalls []struct {
		ID       string `json:"id"`
		Function struct {
			Index     int            `json:"index"`
			Name      string         `json:"name"`
			Arguments map[string]any `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
	ToolName   string `json:"tool_name"`
	ToolCallID string `json:"tool_call_id"`
	Thinking   string `json:"thinking"`
}

// Template-facing types, as Ollama's template package defines them.

type templateTools []templateTool

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateProperties map[string]ToolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

type request struct {
	Template string      `json:"template"`
	System   string      `json:"system"`
	Messages []inMessage `json:"messages"`
	Tools    []inTool    `json:"tools"`
	Prompt   string      `json:"prompt"`
	Suffix   string      `json:"suffix"`
	Date     string      `json:"date"`
	// Think is Ollama's request "think" flag (nil: not set).
	Think *bool `json:"think"`
	// Mode "tooltag": answer with the tool-call tag Ollama derives from the template.
	Mode string `json:"mode"`
}

// toolTag mirrors Ollama's tools/template.go parseTag: the first text in the first
// {{ if ... .ToolCalls ... }} block, trimmed and cut at the first "{". Ollama's output-side
// tool-call parser looks for this tag in the model's output ("{" when there is none).
func toolTag(tmpl *template.Template) string {
	tc := findToolCallNode(tmpl.Tree.Root.Nodes)
	if tc == nil {
		return "{"
	}
	tn := findTextNode(tc.List.Nodes)
	if tn == nil {
		return "{"
	}
	tag := strings.TrimSpace(string(tn.Text))
	tag = strings.ReplaceAll(tag, "\r\n", "\n")
	tag = strings.Split(tag, "{")[0]
	if tag == "" {
		return "{"
	}
	return tag
}

func findToolCallNode(nodes []parse.Node) *parse.IfNode {
	isToolCalls := func(n *parse.IfNode) bool {
		for _, cmd := range n.Pipe.Cmds {
			for _, arg := range cmd.Args {
				if field, ok := arg.(*parse.FieldNode); ok {
					for _, id := range field.Ident {
						if id == "ToolCalls" {
							return true
						}
					}
				}
			}
		}
		return false
	}
	for _, node := range nodes {
		var lists []*parse.ListNode
		switch n := node.(type) {
		case *parse.IfNode:
			if isToolCalls(n) {
				return n
			}
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.ListNode:
			lists = []*parse.ListNode{n}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		}
		for _, l := range lists {
			if l != nil {
				if r := findToolCallNode(l.Nodes); r != nil {
					return r
				}
			}
		}
	}
	return nil
}

func findTextNode(nodes []parse.Node) *parse.TextNode {
	for _, node := range nodes {
		var lists []*parse.ListNode
		stop := true
		switch n := node.(type) {
		case *parse.TextNode:
			return n
		case *parse.ListNode:
			lists, stop = []*parse.ListNode{n}, false
		case *parse.IfNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.ActionNode:
			return nil
		default:
			stop = false
		}
		for _, l := range lists {
			if l != nil {
				if t := findTextNode(l.Nodes); t != nil {
					return t
				}
			}
		}
		if stop {
			return nil
		}
	}
	return nil
}

func funcs(today time.Time) template.FuncMap {
	return template.FuncMap{
		"json": func(v any) string {
			b, _ := json.Marshal(v)
			return string(b)
		},
		"currentDate": func(args ...string) string {
			return today.Format("2006-01-02")
		},
		"yesterdayDate": func(args ...string) string {
			return today.AddDate(0, 0, -1).Format("2006-01-02")
		},
		"toTypeScriptType": func(v any) string {
			if p, ok := v.(ToolProperty); ok {
				return p.ToTypeScriptType()
			}
			if p, ok := v.(*ToolProperty); ok && p != nil {
				return p.ToTypeScriptType()
			}
			return "any"
		},
	}
}

var responseNode = parse.ActionNode{
	NodeType: parse.NodeAction,
	Pipe: &parse.PipeNode{
		NodeType: parse.NodePipe,
		Cmds: []*parse.CommandNode{{
			NodeType: parse.NodeCommand,
			Args:     []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}},
		}},
	},
}

func identifiers(n parse.Node) []string {
	switch n := n.(type) {
	case *parse.ListNode:
		var names []string
		for _, c := range n.Nodes {
			names = append(names, identifiers(c)...)
		}
		return names
	case *parse.TemplateNode:
		if n.Pipe == nil {
			return nil
		}
		return identifiers(n.Pipe)
	case *parse.ActionNode:
		return identifiers(n.Pipe)
	case *parse.BranchNode:
		names := identifiers(n.Pipe)
		for _, l := range []*parse.ListNode{n.List, n.ElseList} {
			if l != nil {
				names = append(names, identifiers(l)...)
			}
		}
		return names
	case *parse.IfNode:
		return identifiers(&n.BranchNode)
	case *parse.RangeNode:
		return identifiers(&n.BranchNode)
	case *parse.WithNode:
		return identifiers(&n.BranchNode)
	case *parse.PipeNode:
		var names []string
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				names = append(names, identifiers(a)...)
			}
		}
		return names
	case *parse.FieldNode:
		return n.Ident
	case *parse.VariableNode:
		return n.Ident
	}
	return nil
}

func vars(t *template.Template) map[string]bool {
	set := map[string]bool{}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		for _, n := range tt.Root.Nodes {
			for _, id := range identifiers(n) {
				set[strings.ToLower(id)] = true
			}
		}
	}
	return set
}

// deleteNode removes every node from the first {{ .Response }} on (Ollama's legacy path).
func deleteNode(n parse.Node, fn func(parse.Node) bool) parse.Node {
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if fn(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if n := walk(c); n != nil {
					nodes = append(nodes, n)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.WithNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.RangeNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			n := walk(t.Pipe)
			if n == nil {
				return nil
			}
			t.Pipe = n.(*parse.PipeNode)
		case *parse.PipeNode:
			var commands []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if n := walk(a); n != nil {
						args = append(args, n)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				commands = append(commands, c)
			}
			if len(commands) == 0 {
				return nil
			}
			t.Cmds = commands
		}
		return n
	}
	return walk(n)
}

func collate(msgs []inMessage) (string, []*inMessage) {
	var system []string
	var collated []*inMessage
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func convertMessages(msgs []*inMessage) []*templateMessage {
	if msgs == nil {
		return nil
	}
	out := make([]*templateMessage, len(msgs))
	for i, m := range msgs {
		var calls []templateToolCall
		for _, tc := range m.ToolCalls {
			calls = append(calls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index:     tc.Function.Index,
					Name:      tc.Function.Name,
					Arguments: templateArgs(tc.Function.Arguments),
				},
			})
		}
		out[i] = &templateMessage{
			Role: m.Role, Content: m.Content, Thinking: m.Thinking, ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID,
		}
	}
	return out
}

func convertTools(tools []inTool) templateTools {
	if tools == nil {
		return nil
	}
	out := make(templateTools, len(tools))
	for i, t := range tools {
		out[i] = templateTool{
			Type:  t.Type,
			Items: t.Items,
			Function: templateToolFunction{
				Name:        t.Function.Name,
				Description: t.Function.Description,
				Parameters: templateToolFunctionParameters{
					Type:       t.Function.Parameters.Type,
					Defs:       t.Function.Parameters.Defs,
					Items:      t.Function.Parameters.Items,
					Required:   t.Function.Parameters.Required,
					Properties: templateProperties(t.Function.Parameters.Properties),
				},
			},
		}
	}
	return out
}

func render(req request) (string, error) {
	today := time.Date(2024, 7, 26, 12, 0, 0, 0, time.UTC)
	if req.Date != "" {
		d, err := time.Parse("2006-01-02", req.Date)
		if err != nil {
			return "", err
		}
		today = d.Add(12 * time.Hour)
	}
	fm := funcs(today)
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(fm).Parse(req.Template)
	if err != nil {
		return "", err
	}
	if req.Mode == "tooltag" {
		return toolTag(tmpl), nil
	}
	vs := vars(tmpl)
	if !vs["messages"] && !vs["response"] {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, &responseNode)
	}

	var b bytes.Buffer
	// Generate request with a suffix (fill-in-the-middle).
	if req.Prompt != "" && req.Suffix != "" {
		err := tmpl.Execute(&b, map[string]any{"Prompt": req.Prompt, "Suffix": req.Suffix, "Response": ""})
		return b.String(), err
	}
	if req.Prompt != "" {
		// A generate request without suffix becomes [system] + user messages.
		req.Messages = append(req.Messages, inMessage{Role: "user", Content: req.Prompt})
	}

	msgs := req.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && req.System != "" {
		msgs = append([]inMessage{{Role: "system", Content: req.System}}, msgs...)
	}
	system, collated := collate(msgs)

	if vs["messages"] {
		err := tmpl.Execute(&b, map[string]any{
			"System":   system,
			"Messages": convertMessages(collated),
			"Tools":    convertTools(req.Tools),
			"Response": "",
			// Ollama's thinking switch: .Think, .ThinkLevel, .IsThinkSet.
			"Think":      req.Think != nil && *req.Think,
			"ThinkLevel": "",
			"IsThinkSet": req.Think != nil,
		})
		return b.String(), err
	}

	// Legacy path.
	system = ""
	var prompt, response string
	execute := func() error {
		if err := tmpl.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": response}); err != nil {
			return err
		}
		system, prompt, response = "", "", ""
		return nil
	}
	for _, m := range collated {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := execute(); err != nil {
					return "", err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := execute(); err != nil {
					return "", err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	var cut bool
	nodes := deleteNode(tmpl.Root.Copy(), func(n parse.Node) bool {
		if field, ok := n.(*parse.FieldNode); ok {
			for _, id := range field.Ident {
				if id == "Response" {
					cut = true
					return false
				}
			}
		}
		return cut
	})
	tree := parse.Tree{Root: nodes.(*parse.ListNode)}
	last, err := template.New("").Funcs(fm).AddParseTree("", &tree)
	if err != nil {
		return "", err
	}
	if err := last.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": response}); err != nil {
		return "", err
	}
	return b.String(), nil
}

func main() {
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var req request
			var answer map[string]string
			if jerr := json.Unmarshal(line, &req); jerr != nil {
				answer = map[string]string{"error": "bad request: " + jerr.Error()}
			} else if s, rerr := render(req); rerr != nil {
				answer = map[string]string{"error": rerr.Error()}
			} else {
				answer = map[string]string{"output": s}
			}
			if err := enc.Encode(answer); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			out.Flush()
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
