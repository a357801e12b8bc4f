package sigil.authz_test

import data.sigil.authz

test_web_may_get_api if {
	authz.allow with input as {
		"source": {"principal": "spiffe://example.org/ns/demo/sa/web"},
		"destination": {"service": "api"},
		"request": {"method": "GET"},
	}
}

test_web_may_not_post if {
	not authz.allow with input as {
		"source": {"principal": "spiffe://example.org/ns/demo/sa/web"},
		"destination": {"service": "api"},
		"request": {"method": "POST"},
	}
}
