package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/policy"
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
	ep := c.pick(nil, key)
	up, err := o.dialTCP(r.Context(), c, ep)
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
	o.pipeTCP(client, up, o.tcpRecord(svc, "", c, ep))
}

// tcpRecord is the record of an opaque TCP connection the app opened to
// svc (zero: to host, outside the mesh), carried to ep of cluster c (nil
// for an outside host).
func (o *outbound) tcpRecord(svc naming.Service, host string, c *cluster, ep *endpoint) *requestRecord {
	rec := &requestRecord{reporter: reporterSource, source: o.p.id.id.String(), service: svc, host: host, protocol: policy.ProtocolTCP, flags: flagNone}
	if c != nil {
		rec.subset = c.subset
	}
	if ep != nil {
		rec.dest = ep.id.String()
	}
	return rec
}

// hijackAndPipe answers a CONNECT with 200 and pipes the app's connection
// to up until both ends are done; rec is the connection's record for the
// metrics.
func (o *outbound) hijackAndPipe(w http.ResponseWriter, up net.Conn, rec *requestRecord) {
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
	o.p.metrics.tcpOpen(rec)
	sent, received := pipe(client, up)
	o.p.metrics.tcpClose(rec, sent, received)
}

// pipeTCP carries a captured connection of the app to up until both ends
// are done, then closes both; rec is the connection's record for the
// metrics.
func (o *outbound) pipeTCP(app, up net.Conn, rec *requestRecord) {
	o.tcp.Add(1)
	defer o.tcp.Done()
	defer app.Close()
	defer up.Close()
	o.p.metrics.tcpOpen(rec)
	sent, received := pipe(app, up)
	o.p.metrics.tcpClose(rec, sent, received)
}
