// Command sigil is Sigil's command-line client: it applies, lists and
// deletes configuration (Istio VirtualService and DestinationRule) and
// shows services, endpoints, sidecars and golden metrics (stat, edges),
// through a server's admin socket.
package main

import (
	"errors"
	"os"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{Use: "sigil", Short: "Sigil's command-line client", SilenceUsage: true, SilenceErrors: true}
	socket := root.PersistentFlags().String("admin-socket", os.Getenv("SIGIL_ADMIN_SOCKET"), "the server's admin socket (<data-dir>/admin.sock); default $SIGIL_ADMIN_SOCKET")
	client := func() (*adminv1.AdminClient, error) {
		if *socket == "" {
			return nil, errors.New("--admin-socket (or SIGIL_ADMIN_SOCKET) is required: the server's <data-dir>/admin.sock")
		}
		return adminv1.NewAdminClient(*socket), nil
	}
	root.AddCommand(newApply(client), newGet(client), newDelete(client), newAudit(), newPolicy(), newStat(client), newEdges(client))
	root.AddCommand(newTap(client), newTop(client), newRollout(client))
	root.AddCommand(newInstall(), newCheck())
	// Everything printed passes through termsafe: no control character
	// from a stored name reaches the terminal.
	os.Exit(termsafe.Main(root, "sigil"))
}

type clientFunc func() (*adminv1.AdminClient, error)
