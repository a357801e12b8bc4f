package main

import "strconv"

// offSwitch is a boolean flag that is on by default and sets *off when
// turned off (--flag=false), so the config's zero value is the flag's
// default and a server built without flags behaves as one run without
// them.
type offSwitch struct{ off *bool }

// String is the flag's value: "true" unless turned off.
func (s offSwitch) String() string {
	if s.off == nil {
		return "true"
	}
	return strconv.FormatBool(!*s.off)
}

// Set takes a boolean as strconv.ParseBool reads it.
func (s offSwitch) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	*s.off = !on
	return nil
}

// Type names the flag's type in help, as pflag's own booleans do.
func (offSwitch) Type() string { return "bool" }
