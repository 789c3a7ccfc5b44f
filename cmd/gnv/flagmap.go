package main

import (
	"errors"

	"github.com/gnv-project/gnv/endpoint"
)

// fieldFlags maps the configuration fields the library validates
// (endpoint.FieldError.Field, a path in stack.Config) to the gnv up flags
// that set them. It is the one place where the two sets of names meet:
// the library checks ranges and combinations once, and its errors are
// shown here with flag names.
var fieldFlags = map[string]string{
	"VNI":                 "vni",
	"Mode":                "mode",
	"Remotes":             "remote",
	"Group":               "group",
	"Port":                "port",
	"Addresses":           "addr",
	"MTU":                 "mtu",
	"MAC":                 "mac",
	"Endpoint.FDBMax":     "max-addr",
	"Endpoint.FDBTimeout": "timeout",
	"Endpoint.SrcPortMin": "port-range",
	"Endpoint.SrcPortMax": "port-range",
	"Endpoint.DF":         "df",
	"Endpoint.Options":    "option",
	"Underlay.Local":      "local",
	"Underlay.Address":    "underlay-addr",
	"Underlay.Gateway":    "gateway",
	"Underlay.Device":     "dev",
}

// flagName names a field as gnv up does: its flag, or, for a field no flag
// sets, the field itself.
func flagName(field string) string {
	if f, ok := fieldFlags[field]; ok {
		return "--" + f
	}
	return field
}

// flagError is a library FieldError told with flag names, and with the
// values as the flags were given (given, by field) where the plan passed
// the library a converted one.
type flagError struct {
	fe    *endpoint.FieldError
	given map[string]any
}

func (e *flagError) Error() string {
	fe := *e.fe
	if v, ok := e.given[fe.Field]; ok {
		fe.Value = v
	}
	return fe.Format(flagName)
}

func (e *flagError) Unwrap() error { return e.fe }

// socketLevel says whether err is about a setting of the shared socket,
// which no one interface's section holds.
func (e *flagError) socketLevel() bool { return socketFlags[fieldFlags[e.fe.Field]] }

// withFlags returns err told with flag names if it is a library FieldError
// (as the library returns them: not wrapped), else err.
func withFlags(err error, given map[string]any) error {
	var fe *endpoint.FieldError
	if errors.As(err, &fe) && error(fe) == err {
		return &flagError{fe: fe, given: given}
	}
	return err
}
