package traffic

import "strings"

// errPrefix starts the text of every error this package returns.
const errPrefix = "traffic: "

// bare shows a traffic error without its prefix, for wrapping it in
// another traffic error, so that a message carries the prefix once, at its
// front ("traffic: a.yaml: document 1: VirtualService default/x: ...").
// errors.Is and errors.As see through it.
type bare struct{ err error }

func (b bare) Error() string { return strings.TrimPrefix(b.err.Error(), errPrefix) }
func (b bare) Unwrap() error { return b.err }
