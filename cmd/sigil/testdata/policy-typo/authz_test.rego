package sigil.authz_test

import data.sigil.authz

test_web_reads if {
	authz.allow with input as {"source": {"service_account": "web"}, "request": {"method": "GET"}}
}

test_web_may_not_write if {
	not authz.allow with input as {"source": {"service_account": "web"}, "request": {"method": "POST"}}
}
