package endpoint

import (
	"fmt"
	"strings"
)

// FieldError reports an invalid configuration field. Every configuration
// check of this package and of package stack returns one, so a caller can
// find it with errors.As, learn which field is wrong and what it accepts,
// and, if it calls the fields something else (a command line calls them
// flags), render the message with its own names through Format.
//
// Error renders "NAME VALUE PROBLEM: VALID: ERR", leaving out what is
// empty, with NAME a word for the field ("vni", "remote", "forwarding table
// size"):
//
//	vni 16777216 out of range: valid VNIs are 0..16777215
type FieldError struct {
	// Field is the path of the field in the configuration that was given,
	// spelled as a Go selector from it:
	//
	//   - endpoint.Config (New, Config.Validate): "VNI", "Remotes",
	//     "FDBMax".
	//   - stack.Config (stack.New, stack.Config.Validate): "VNI", "Port",
	//     "Addresses", and "Endpoint.FDBMax" for the fields of its Endpoint
	//     part.
	//   - A stack underlay's own fields are "Underlay.Address",
	//     "Underlay.Device", ... wherever the underlay is given (as
	//     stack.Config.Underlay or to stack.OpenUnderlay), and those of
	//     stack.UnderlayOptions are "UnderlayOptions.Family".
	//
	// A list is named without an index ("Remotes"); Value is then the
	// element at fault.
	Field string

	// Value is the invalid value, or nil when the field is missing or no
	// one value is at fault.
	Value any

	// Problem says what is wrong, worded to follow the field and its value:
	// "out of range", "is not a multicast address". It may be empty.
	Problem string

	// Valid says what the field accepts: "valid VNIs are 0..16777215". It
	// may be empty.
	//
	// Problem and Valid name any other field they mention as "{Path}"
	// ("and {Group} are exclusive"), for Format to render like Field.
	Valid string

	// Err is the underlying error, if any.
	Err error
}

// Error renders the message with this package's words for the fields.
func (e *FieldError) Error() string { return e.Format(fieldWord) }

// Unwrap returns Err.
func (e *FieldError) Unwrap() error { return e.Err }

// Format renders the message with name(path) naming each field: the one
// at fault and any other that Problem or Valid mention.
func (e *FieldError) Format(name func(field string) string) string {
	var b strings.Builder
	b.WriteString(name(e.Field))
	if e.Value != nil {
		fmt.Fprintf(&b, " %v", e.Value)
	}
	if e.Problem != "" {
		b.WriteString(" ")
		b.WriteString(expandFields(e.Problem, name))
	}
	if e.Valid != "" {
		b.WriteString(": ")
		b.WriteString(expandFields(e.Valid, name))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Rename returns a copy of e with Field, and the fields that Problem and
// Valid name, renamed by rename: how a configuration that holds a Config
// (stack.Config holds one as its Endpoint) reports the errors of New and
// Config.Validate with its own paths.
func (e *FieldError) Rename(rename func(field string) string) *FieldError {
	r := *e
	r.Field = rename(e.Field)
	braced := func(f string) string { return "{" + rename(f) + "}" }
	r.Problem = expandFields(e.Problem, braced)
	r.Valid = expandFields(e.Valid, braced)
	return &r
}

// expandFields replaces each "{Path}" in s with name(Path).
func expandFields(s string, name func(string) string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			break
		}
		b.WriteString(s[:open])
		b.WriteString(name(s[open+1 : open+end]))
		s = s[open+end+1:]
	}
	b.WriteString(s)
	return b.String()
}

// fieldWords are the words Error uses for fields whose path, lowercased,
// does not read as one.
var fieldWords = map[string]string{
	"Remotes":                "remote",
	"Addresses":              "address",
	"FDBMax":                 "forwarding table size",
	"FDBTimeout":             "forwarding entry timeout",
	"SrcPortMin":             "source port range",
	"SrcPortMax":             "source port range",
	"MaxMarkOptions":         "mark options",
	"Underlay.Local":         "local underlay address",
	"UnderlayOptions.Family": "underlay family",
}

// fieldWord names a field for Error: "Endpoint.FDBMax" (a stack.Config
// path into this package's Config) reads as "FDBMax" would, a listed path
// as fieldWords says, any other lowercased with spaces for dots
// ("Underlay.Address" is "underlay address").
func fieldWord(path string) string {
	path = strings.TrimPrefix(path, "Endpoint.")
	if w, ok := fieldWords[path]; ok {
		return w
	}
	return strings.ToLower(strings.ReplaceAll(path, ".", " "))
}
