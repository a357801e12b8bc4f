package adminv1

import (
	"errors"
	"fmt"
)

// APIError is the admin API's one error type: a message and the HTTP
// status it is sent with. On the wire it is {"error": Message}; the status
// is the response's.
type APIError struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

// Error returns the server's message as it is: the CLI prints it to the
// user, so it carries no prefix of this package.
func (e *APIError) Error() string { return e.Message }

// Errorf returns an APIError with status and a formatted message.
func Errorf(status int, format string, args ...any) *APIError {
	return &APIError{Status: status, Message: fmt.Sprintf(format, args...)}
}

// ErrServerNotRunning means nothing answers on the admin socket.
var ErrServerNotRunning = errors.New("adminv1: no sigil-server is running on this data dir")
