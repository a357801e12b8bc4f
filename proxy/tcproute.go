package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/naming"
)

// tcpCluster picks where one opaque TCP connection for svc on port (0:
// not known) goes: the destination a tls route picks by weight for the
// ClientHello's sni (when the connection is TLS and a tls route matches),
// else a tcp route of the service's VirtualService for this sidecar's
// labels, else the service itself. The whole connection goes to that one
// destination, as in Istio's TCP traffic shifting and TLS passthrough.
// dest names it for logs and errors.
func (o *outbound) tcpCluster(st *meshState, svc naming.Service, port uint32, sni string) (c *cluster, dest string) {
	rt, ok := st.table.MatchTLS(svc.String(), sni, port, o.p.cfg.labels)
	if !ok {
		rt, ok = st.table.MatchTCP(svc.String(), port, o.p.cfg.labels)
	}
	if ok {
		d := rt.Pick()
		to := naming.Service{Name: d.Service, Namespace: d.Namespace}
		return o.clusterAt(st, to, d.Subset, port), to.String() + subsetSuffix(d.Subset)
	}
	return o.clusterAt(st, svc, "", port), svc.String()
}

// connectTLS tunnels a CONNECT to a service that tls routes cover: the
// app's ClientHello comes only after the 200, so the sidecar answers
// first, reads the ClientHello for its SNI, and then routes; a connection
// it cannot route is closed.
func (o *outbound) connectTLS(w http.ResponseWriter, r *http.Request, svc naming.Service, port uint32) {
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	client.SetReadDeadline(time.Now().Add(clientHelloWait))
	record, sni := readClientHello(buf.Reader)
	client.SetReadDeadline(time.Time{})
	st := o.state.Load()
	c, dest := o.tcpCluster(st, svc, port, sni)
	if c == nil || len(c.eps) == 0 {
		o.p.log.Warn("tls route has no endpoint", "service", svc.String(), "destination", dest)
		return
	}
	key, _ := c.hash.key(r) // a tunnel has no response headers for a cookie
	up, err := o.dialTCP(r.Context(), c, c.pick(nil, key))
	if err != nil {
		o.p.log.Warn("upstream tcp failed", "service", svc.String(), "destination", dest, "error", err)
		return
	}
	if _, err := up.Write(record); err != nil {
		up.Close()
		return
	}
	if n := buf.Reader.Buffered(); n > 0 {
		peeked, _ := buf.Reader.Peek(n)
		up.Write(peeked)
	}
	o.pipeTCP(client, up, svc.Name)
}

// hijackAndPipe answers a CONNECT with 200 and pipes the app's connection
// to up until both ends are done; label names the destination in the
// metric.
func (o *outbound) hijackAndPipe(w http.ResponseWriter, up net.Conn, label string) {
	// Both ends close when the tunnel ends: pipe only half-closes, and an
	// mTLS connection's CloseWrite leaves its socket (and its slot among
	// the destination's connections) open.
	defer up.Close()
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	o.tcp.Add(1)
	defer o.tcp.Done()
	client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	if n := buf.Reader.Buffered(); n > 0 {
		peeked, _ := buf.Reader.Peek(n)
		up.Write(peeked)
	}
	o.p.metrics.tcp.WithLabelValues("outbound", o.p.id.id.String(), label, "ok").Inc()
	pipe(client, up)
}

// pipeTCP carries a captured connection of the app to up until both ends
// are done, then closes both; label names the destination in the metric.
func (o *outbound) pipeTCP(app, up net.Conn, label string) {
	o.tcp.Add(1)
	defer o.tcp.Done()
	defer app.Close()
	defer up.Close()
	o.p.metrics.tcp.WithLabelValues("outbound", o.p.id.id.String(), label, "ok").Inc()
	pipe(app, up)
}
