package main

import (
	"context"
	"fmt"
	"os"
)

// nginxPair is two nginx processes, one worker each: plain HTTP in,
// TLS 1.3 with client certificates between them, upstream keep-alive.
func (e *env) nginxPair(ctx context.Context) (*setup, error) {
	return e.startNginx(ctx, "nginx", e.backend, nginxProto{
		clientListen: "",
		clientPass: `proxy_pass https://peer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";`,
		clientTLS:    "proxy_ssl",
		serverListen: "ssl",
		serverPass: `proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";`,
	})
}

// nginxGRPCPair is the nginx pair for gRPC: the caller's nginx takes h2c
// from the app and calls its peer with grpc_pass grpcs:// (TLS 1.3, the
// SVID as client certificate, upstream keep-alive); the callee's listens
// with ssl http2 and ssl_verify_client on against Sigil's bundle, then
// grpc_pass grpc:// to the backend. nginx does not multiplex gRPC
// upstream: each call in flight holds an upstream connection of its own
// (kept alive between calls). client_max_body_size 0: nginx counts a
// stream's messages as one request body (1 MiB by default).
func (e *env) nginxGRPCPair(ctx context.Context) (*setup, error) {
	return e.startNginx(ctx, "nginx-grpc", e.grpcBackend, nginxProto{
		clientListen: " http2",
		clientPass:   "grpc_pass grpcs://peer;",
		clientTLS:    "grpc_ssl",
		serverListen: "ssl http2",
		serverPass:   "grpc_pass grpc://app;",
		extra:        "client_max_body_size 0;",
	})
}

// nginxProto is what differs between the HTTP and the gRPC pair: the
// listen parameters of each side, the pass directives of its location,
// the caller's upstream TLS directive prefix, and extra server lines.
type nginxProto struct {
	clientListen, clientPass, clientTLS string
	serverListen, serverPass            string
	extra                               string
}

// nginxMain is the part of an nginx configuration outside http{}: one
// process, one worker, files under dir named after side.
func nginxMain(dir, side string) string {
	return fmt.Sprintf("daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/%s.pid;\nerror_log %s/%s-error.log warn;\nevents { worker_connections 8192; }\n", dir, side, dir, side)
}

// startNginx writes a pair's configurations to e.dir/name (a.conf the
// caller's, b.conf the callee's, in front of backend), starts both and
// waits for their ports. The caller's nginx does not verify the callee
// (nginx cannot check a URI SAN; bench/README.md).
func (e *env) startNginx(ctx context.Context, name, backend string, p nginxProto) (*setup, error) {
	a, b := freePort(), freePort()
	dir := e.dir + "/" + name
	os.MkdirAll(dir, 0o755)
	client := nginxMain(dir, "a") + fmt.Sprintf(`http {
  access_log off;
  upstream peer { server %s; keepalive 512; keepalive_requests 1000000; }
  server {
    listen %s%s;
    keepalive_requests 1000000;
    %s
    location / {
      %s
      %[6]s_certificate %[7]s;
      %[6]s_certificate_key %[8]s;
      %[6]s_trusted_certificate %[9]s;
      %[6]s_protocols TLSv1.3;
      %[6]s_session_reuse on;
    }
  }
}
`, b, a, p.clientListen, p.extra, p.clientPass, p.clientTLS, e.certFile, e.keyFile, e.bundleFile)
	server := nginxMain(dir, "b") + fmt.Sprintf(`http {
  access_log off;
  upstream app { server %s; keepalive 512; keepalive_requests 1000000; }
  server {
    listen %s %s;
    keepalive_requests 1000000;
    %s
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_client_certificate %s;
    ssl_verify_client on;
    ssl_verify_depth 4;
    ssl_protocols TLSv1.3;
    location / {
      %s
    }
  }
}
`, backend, b, p.serverListen, p.extra, e.certFile, e.keyFile, e.bundleFile, p.serverPass)
	os.WriteFile(dir+"/a.conf", []byte(client), 0o644)
	os.WriteFile(dir+"/b.conf", []byte(server), 0o644)
	srv, err := e.start(name+"-server", "nginx", "-c", dir+"/b.conf", "-e", dir+"/b-error.log")
	if err != nil {
		return nil, err
	}
	cli, err := e.start(name+"-client", "nginx", "-c", dir+"/a.conf", "-e", dir+"/a-error.log")
	if err != nil {
		return nil, err
	}
	if err := waitPort(ctx, a); err != nil {
		return nil, err
	}
	return &setup{name: "nginx", target: a, client: cli, server: srv}, waitPort(ctx, b)
}
