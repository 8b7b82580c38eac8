package registry

import (
	"errors"
	"fmt"
	"strings"
)

// ErrFilterSyntax is wrapped by CheckFilter's errors.
var ErrFilterSyntax = errors.New("a row filter must be one SQL expression")

// CheckFilter reports whether a row filter reads as one SQL expression
// that pgoutpost may place inside WHERE ( … ) of ALTER PUBLICATION: outside
// quoted text its parentheses balance and never close more than they open,
// and it holds no statement separator (;), comment (-- or /* */) or dollar
// quoting. A filter that failed this could close pgoutpost's parenthesis
// and add SQL of its own. It is a first, lexical line of defence: the
// publication commands also send the statement that holds a filter over the
// extended protocol (one statement only), check it in a transaction that is
// rolled back, and publish PostgreSQL's own deparsed form of it.
func CheckFilter(filter string) error {
	depth := 0
	for i := 0; i < len(filter); i++ {
		c := filter[i]
		switch {
		case c == '\'':
			// A string literal; E'…' strings also escape with a backslash.
			escapes := i > 0 && (filter[i-1] == 'e' || filter[i-1] == 'E') && (i == 1 || !isIdentChar(rune(filter[i-2])))
			end := closeQuote(filter, i, '\'', escapes)
			if end < 0 {
				return fmt.Errorf("%w: unterminated string literal at byte %d", ErrFilterSyntax, i)
			}
			if !escapes && strings.Contains(filter[i:end], "\\") {
				// With standard_conforming_strings off the server would read
				// the backslash as an escape, and the literal would end elsewhere.
				return fmt.Errorf("%w: a backslash in the string literal at byte %d: write it as E'…'", ErrFilterSyntax, i)
			}
			i = end
		case c == '"':
			end := closeQuote(filter, i, '"', false)
			if end < 0 {
				return fmt.Errorf("%w: unterminated quoted identifier at byte %d", ErrFilterSyntax, i)
			}
			i = end
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return fmt.Errorf("%w: ) at byte %d closes a parenthesis it did not open", ErrFilterSyntax, i)
			}
		case c == ';':
			return fmt.Errorf("%w: ; at byte %d", ErrFilterSyntax, i)
		case c == '$':
			return fmt.Errorf("%w: $ at byte %d (no parameters or dollar quoting)", ErrFilterSyntax, i)
		case strings.HasPrefix(filter[i:], "--"), strings.HasPrefix(filter[i:], "/*"):
			return fmt.Errorf("%w: a comment at byte %d", ErrFilterSyntax, i)
		}
	}
	if depth != 0 {
		return fmt.Errorf("%w: %d parenthesis(es) left open", ErrFilterSyntax, depth)
	}
	if strings.TrimSpace(filter) == "" {
		return fmt.Errorf("%w: it is empty", ErrFilterSyntax)
	}
	return nil
}

// closeQuote returns the index of the quote that closes the one at start
// (a doubled quote is an escaped one), or -1.
func closeQuote(s string, start int, q byte, backslash bool) int {
	for i := start + 1; i < len(s); i++ {
		switch {
		case backslash && s[i] == '\\':
			i++
		case s[i] == q && i+1 < len(s) && s[i+1] == q:
			i++
		case s[i] == q:
			return i
		}
	}
	return -1
}
