package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pgoutpost/pgoutpost/internal/connsource"
	"github.com/pgoutpost/pgoutpost/registry"
)

// The decoder walks the yaml.Node tree itself instead of using yaml.v3's
// Decode with KnownFields: that way every problem (unknown key, wrong type,
// bad on_delete rule) carries its line, all of them are collected rather than
// the first, and the line of every key is remembered for Validate's messages.

// nodeDecoder is implemented by types that decode themselves (Relation).
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

// defaulter is implemented by list items that have defaults of their own.
type defaulter interface{ setDefaults() }

// setDefaults fills the defaults of a list item or a section given by a
// pointer before its keys are decoded over them, so that a key set to ""
// stays "" and Validate can name it.
func setDefaults(v any) {
	switch v := v.(type) {
	case defaulter:
		v.setDefaults()
	case *connsource.AWSSecret:
		v.Region = DefaultAWSRegion
	}
}

type decoder struct {
	file     string
	lines    map[string]int
	problems []error
	nodes    int // nodes walked, aliases expanded
}

// MaxNodes bounds the YAML nodes a configuration expands to: aliases can
// repeat a list inside a list at every level (a "billion laughs"), which a
// small file turns into a huge walk. A real configuration holds a few
// thousand nodes.
const MaxNodes = 200000

var (
	durationType = reflect.TypeOf(time.Duration(0))
	onDeleteType = reflect.TypeOf(registry.OnDelete{})
)

func decode(filename string, data []byte) (*Config, []error) {
	d := &decoder{file: filename, lines: map[string]int{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.problems = append(d.problems, &Problem{File: filename, Msg: "empty configuration"})
			return nil, d.problems
		}
		// yaml.v3 syntax errors read "yaml: line N: …"; keep its line.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if num, after, ok := strings.Cut(rest, ": "); ok {
				if n, err := strconv.Atoi(num); err == nil {
					line, msg = n, after
				}
			}
		}
		d.problems = append(d.problems, &Problem{File: filename, Line: syntaxErrorLine(data, line, msg), Msg: "bad YAML: " + msg})
		return nil, d.problems
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.problems = append(d.problems, &Problem{File: filename, Line: extra.Line, Msg: "more than one YAML document"})
	}
	c := Default()
	c.file, c.lines = filename, d.lines
	d.decode(&doc, reflect.ValueOf(c).Elem(), "")
	return c, d.problems
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.problems = append(d.problems, &Problem{File: d.file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// kindName names a node's YAML type for "want X, got Y" messages.
// syntaxErrorLine corrects the line yaml.v3 gives for a syntax error. Its
// parser errors ("did not find expected …") carry a 0-based line, one early;
// a tab in an indentation is reported at the line where the token it
// interrupts began, not where the tab is.
func syntaxErrorLine(data []byte, line int, msg string) int {
	if line == 0 {
		return 0
	}
	lines := strings.Split(string(data), "\n")
	switch {
	case strings.HasPrefix(msg, "did not find expected"):
		line++
		// Past the end of the text (an unclosed bracket): its last line.
		for line > 1 && (line > len(lines) || strings.TrimSpace(lines[line-1]) == "") {
			line--
		}
	case strings.Contains(msg, "tab character"):
		for i := line - 1; i < len(lines); i++ {
			indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " \t"))]
			if strings.Contains(indent, "\t") {
				return i + 1
			}
		}
	}
	return line
}

// allDigits matches a decimal integer as YAML writes it.
var allDigits = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case "!!null":
		return "nothing"
	}
	return fmt.Sprintf("%s %s", strings.TrimPrefix(n.ShortTag(), "!!"), n.Value)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.nodes++; d.nodes > MaxNodes {
		if d.nodes == MaxNodes+1 {
			d.errorf(n, path, "the configuration expands to more than %d YAML nodes (aliases repeating aliases?): refused", MaxNodes)
		}
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			d.decode(n.Content[0], v, path)
		}
		return
	case yaml.AliasNode:
		// The struct types are not recursive, so an alias cannot lead the
		// walk back into itself; MaxNodes bounds how often it repeats.
		d.decode(n.Alias, v, path)
		return
	}
	if path != "" {
		if _, seen := d.lines[path]; !seen {
			d.lines[path] = n.Line
		}
	}
	if v.CanAddr() {
		if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
			nd.decodeNode(d, n, path)
			return
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value keeps the default
	}
	switch {
	case v.Type() == durationType:
		d.duration(n, v, path)
		return
	case v.Type() == onDeleteType:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want an on_delete rule, got %s", kindName(n))
			return
		}
		od, err := registry.ParseOnDelete(n.Value)
		if err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(od))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		setDefaults(p.Interface())
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			e := s.Index(i)
			setDefaults(e.Addr().Interface())
			d.decode(item, e, fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "want a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.errorf(k, path, "want a string key, got %s", kindName(k))
				continue
			}
			kp := join(path, k.Value)
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.errorf(k, kp, "duplicate key")
				continue
			}
			d.lines[kp] = k.Line
			e := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, e, kp)
			m.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.errorf(n, path, "want true or false, got %s", kindName(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && allDigits.MatchString(n.Value) {
			// YAML reads an integer beyond int64 as a float.
			d.errorf(n, path, "the integer %s is too large (at most %d)", n.Value, int64(math.MaxInt64))
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "want an integer, got %s", kindName(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		v.SetInt(i)
	default:
		panic(fmt.Sprintf("config: no decoding for %s", v.Type()))
	}
}

// duration accepts a Go duration ("30s", "1h30m") or the integer 0.
func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!int" && n.Value == "0" {
			v.SetInt(0)
			return
		}
		if n.ShortTag() == "!!str" {
			if dur, err := time.ParseDuration(n.Value); err == nil {
				v.SetInt(int64(dur))
				return
			}
		}
	}
	d.errorf(n, path, "want a duration such as 30s, 5m or 720h, got %s", kindName(n))
}

// structure decodes a mapping into a struct by its yaml tags.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		idx, ok := fields[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, path, "want a key, got %s", kindName(k))
			continue
		case !ok:
			d.errorf(k, kp, "unknown key %q (known keys: %s)", k.Value, knownKeys(fields))
			continue
		case seen[k.Value]:
			d.errorf(k, kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		d.lines[kp] = k.Line
		d.decode(val, v.Field(idx), kp)
	}
}

func yamlFields(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		fields[name] = i
	}
	return fields
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// Relation is one entry of relations:. It is written either as a rule alone
// (`userapp_report.unit_id: CASCADE`) or as a mapping with the keys below.
type Relation struct {
	// OnDelete is the rule; a parent link needs none (it is CASCADE).
	OnDelete registry.OnDelete `yaml:"on_delete"`
	// References declares the target (table.column or schema.table.column)
	// of a foreign key without a database constraint.
	References string `yaml:"references"`
	// ParentLink marks a multi-table inheritance link from child to parent.
	ParentLink bool `yaml:"parent_link"`
	// Default is the value SET_DEFAULT writes when the default lives in the
	// application (Django's default=) instead of the column's DEFAULT.
	Default string `yaml:"default"`
}

// relationFields has Relation's fields without its decodeNode method.
type relationFields Relation

func (r *Relation) decodeNode(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!null" {
			d.errorf(n, path, "want an on_delete rule or a mapping, got nothing")
			return
		}
		d.decode(n, reflect.ValueOf(&r.OnDelete).Elem(), path)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want an on_delete rule or a mapping with on_delete, references, parent_link, default; got %s", kindName(n))
		return
	}
	d.decode(n, reflect.ValueOf((*relationFields)(r)).Elem(), path)
}
