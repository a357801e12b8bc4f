package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
)

// openL4 opens the upstream of one opaque TCP connection the app opened
// to key (svc's key, or, svc zero, a host outside the mesh) on port (0:
// not known): the destination a tls route picks by weight for the
// ClientHello's sni (when the connection is TLS and a tls route matches),
// else a tcp route of the host's VirtualService for this sidecar's
// labels, else the service itself. The whole connection goes to that one
// destination, as in Istio's TCP traffic shifting and TLS passthrough: an
// endpoint of a mesh cluster (hashKey gives the consistentHash key of the
// cluster's policy), or a host outside the mesh through its
// DestinationRule's target (openOutside). It returns the connection and
// its record for the metrics; errors name the destination.
func (o *outbound) openL4(ctx context.Context, st *meshState, svc naming.Service, key string, port uint32, sni string, hashKey func(*upstream.Cluster) string) (net.Conn, *requestRecord, error) {
	rt, ok := st.table.MatchTLS(key, sni, port, o.p.cfg.labels)
	if !ok {
		rt, ok = st.table.MatchTCP(key, port, o.p.cfg.labels)
	}
	to, subset := svc, ""
	if ok {
		d := rt.Pick()
		if d.Outside != "" {
			return o.openOutside(ctx, st, svc, key, d, port)
		}
		to, subset = naming.Service{Name: d.Service, Namespace: d.Namespace}, d.Subset
	}
	if to.IsZero() {
		return nil, nil, fmt.Errorf("proxy: no tcp or tls route of %s matches", key)
	}
	dest := to.String() + subsetSuffix(subset)
	c := pinned(ctx, o.clusterAt(st, to, subset, port))
	if c == nil || len(c.Eps) == 0 {
		return nil, nil, fmt.Errorf("proxy: no endpoint of %s", dest)
	}
	ep := c.Pick(nil, hashKey(c))
	up, err := o.dialTCP(ctx, c, ep)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: upstream %s failed: %s", dest, reasonOf(err))
	}
	return up, o.tcpRecord(svc, outsideLabel(svc, key), c, ep), nil
}

// connectTLS tunnels a CONNECT to a service that tls routes cover: the
// app's ClientHello comes only after the 200, so the sidecar answers
// first, reads the ClientHello for its SNI, and then routes; a connection
// it cannot route is closed.
func (o *outbound) connectTLS(w http.ResponseWriter, r *http.Request, svc naming.Service, key string, port uint32) {
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	client.SetReadDeadline(time.Now().Add(clientHelloWait))
	record, sni := readClientHello(buf.Reader)
	client.SetReadDeadline(time.Time{})
	up, rec, err := o.openL4(r.Context(), o.state.Load(), svc, key, port, sni, requestHashKey(r))
	if err != nil {
		o.p.log.Warn("tls route refused", "host", key, "error", err)
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
	o.pipeTCP(client, up, rec)
}

// requestHashKey is the consistentHash key of a CONNECT request for a
// cluster (a tunnel has no response headers for a cookie).
func requestHashKey(r *http.Request) func(*upstream.Cluster) string {
	return func(c *upstream.Cluster) string {
		key, _ := c.Hash.Key(r)
		return key
	}
}

// tcpRecord is the record of an opaque TCP connection the app opened to
// svc (zero: to host, outside the mesh), carried to ep of cluster c (nil
// for an outside host).
func (o *outbound) tcpRecord(svc naming.Service, host string, c *upstream.Cluster, ep *upstream.Endpoint) *requestRecord {
	rec := &requestRecord{reporter: reporterSource, source: o.p.id.id.String(), service: svc, host: o.hostLabel(host), protocol: protocol.TCP, flags: flagNone}
	if c != nil {
		rec.subset = c.Subset
	}
	if ep != nil {
		rec.dest = ep.ID.String()
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
	sent, received := hop.Pipe(client, up)
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
	sent, received := hop.Pipe(app, up)
	o.p.metrics.tcpClose(rec, sent, received)
}
