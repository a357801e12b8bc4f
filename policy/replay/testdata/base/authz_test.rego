package sigil.authz_test

import data.sigil.authz

test_web_reads if {
	authz.allow with input as {"source": {"service_account": "web"}, "destination": {"service": "api"}, "request": {"method": "GET", "url_path": "/v1/items"}}
}
