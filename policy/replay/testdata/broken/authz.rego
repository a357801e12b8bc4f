package sigil.authz

allow if {
	input.source.service_account == 
}
