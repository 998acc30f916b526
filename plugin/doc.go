// Package plugin runs ringwire plugins: separate processes that serve RPC
// methods (a Mux) to a host program over shared memory, a Unix
// socket or TCP with mutual TLS.
//
// Host side: Launch starts a plugin binary and connects to it, Connect
// dials a remote plugin, and Listen accepts external plugins started
// independently; each gives a Client, which supervises its plugin (health
// pings, restarts with exponential backoff, graceful stop). Registry holds
// named Clients.
//
// Plugin side: Serve is the single entry point of every plugin binary. It
// reads the environment its host prepared and serves the plugin's Mux until
// the host goes away.
//
// # Launching
//
// Launch creates a connected Unix socket pair and hands one end to the child
// as an inherited descriptor (fd 3), with a random token and a magic cookie
// in the child's environment. The handshake runs on that socket, not on
// stdout, so anything the plugin prints is harmless: stdout and stderr are
// captured line by line into the host's slog.Logger (tagged plugin=<name>,
// stream=stdout|stderr) without a line-length limit. The host runs the
// listening side of the handshake (the transport's server side: it authenticates the
// token, chooses the transport and creates the shared-memory rings); the
// plugin runs the dialling side, just as an external
// plugin dials a host's Listener. On Linux the connection switches to
// shared memory and the socket stays open as the liveness channel.
//
// A launched plugin never outlives its host: on Linux the child gets
// Pdeathsig=SIGKILL, and on every system Serve returns as soon as the
// connection to the host ends (its caller then exits).
//
// # Modes of Serve
//
// Serve picks its mode from the environment:
//
//	launched  RINGWIRE_PLUGIN_COOKIE, RINGWIRE_PLUGIN_FD, RINGWIRE_PLUGIN_TOKEN (set by Launch)
//	external  RINGWIRE_CONNECT=unix:/path or tcp:host:port, RINGWIRE_PLUGIN_TOKEN,
//	          RINGWIRE_TLS_BUNDLE (tcp: a transport.CA ClientBundle, PEM or a file path)
//	remote    RINGWIRE_LISTEN=tcp:host:port, RINGWIRE_TLS_BUNDLE (a ServerBundle),
//	          optional RINGWIRE_PLUGIN_TOKEN
//
// On TCP without RINGWIRE_TLS_BUNDLE, a plugin whose Plugin.Transport sets
// TLS or InsecurePlaintextTCP uses that; Plugin.Transport also picks the
// compressions, ring waiting and message bound of the plugin's side.
//
// Run by hand with none of these, Serve returns an ErrConfig with a message
// saying how the binary is meant to be started, instead of waiting forever.
// ConnectEnv and ListenEnv build the environment of the last two modes.
//
// # Metadata
//
// A plugin's name, version, description and constants travel in the
// handshake: the host reads them from Client.Info without a call.
//
// # Platforms
//
// Everything works on Linux. Launch works on other Unix systems without
// Pdeathsig and without shared memory (framed messages on the socket pair);
// on Windows it returns an error matching ErrUnsupported, while external and
// remote plugins over TCP work everywhere.
package plugin
