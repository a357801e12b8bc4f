# A policy with the typo `sigil policy check` exists to catch: it compiles,
# its rule reading input.request.methd never applies, and every write is
# silently denied.
package sigil.authz

import data.sigil.roles

default allow := false

allow if {
	roles.reader[input.source.service_account]
	input.request.method == "GET"
}

allow if {
	roles.writer[input.source.service_account]
	input.request.methd in {"PUT", "POST"}
}
