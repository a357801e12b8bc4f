package naming

import "strconv"

// Port is the port an authority names ("api:8080", "[::1]:8080"), 0 when
// it names none. The authority is checked as Resolver.Authority checks
// it; errors wrap ErrMalformed.
func Port(authority string) (uint16, error) {
	host, err := splitPort(authority)
	if err != nil {
		return 0, err
	}
	if len(host) == len(authority) {
		return 0, nil
	}
	n, err := strconv.ParseUint(authority[len(host)+1:], 10, 16)
	if err != nil {
		return 0, err // unreachable: splitPort checked 1 to 65535
	}
	return uint16(n), nil
}
