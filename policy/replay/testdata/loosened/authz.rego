package sigil.authz

# The policy in force: web reads the API and places orders, admin cancels
# orders, batch reaches the database over TCP.

default allow := false

allow if {
	input.source.service_account == "web"
	input.destination.service == "api"
	input.request.method == "GET"
	startswith(input.request.url_path, "/v1/")
}

allow if {
	input.source.service_account == "web"
	input.destination.service == "api"
	input.request.method == "POST"
	input.request.url_path == "/v1/orders"
}

allow if {
	input.source.service_account == "admin"
	input.destination.service == "api"
	input.request.method == "DELETE"
	startswith(input.request.url_path, "/v1/orders/")
}

allow if {
	input.source.service_account == "batch"
	input.destination.service == "db"
	input.request.protocol == "tcp"
}

# Proposed: web may also read the API's health endpoint.
allow if {
	input.source.service_account == "web"
	input.destination.service == "api"
	input.request.method == "GET"
	input.request.url_path == "/healthz"
}
