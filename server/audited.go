package server

import (
	"context"

	"github.com/sigil-mesh/sigil/audit"
)

// audited records events, then runs the store write they describe.
func (s *Server) audited(_ context.Context, events []audit.Event, write func() error) error {
	if err := s.audit.Append(events...); err != nil {
		return err
	}
	return write()
}
