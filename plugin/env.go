package plugin

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
)

// Environment variables that tell Serve how to reach its host. Launch sets
// the first three; ConnectEnv and ListenEnv build the others.
const (
	// envCookie carries cookieValue: it marks a process launched by a
	// ringwire host (and lets a plugin refuse an environment from another
	// protocol version).
	envCookie = "RINGWIRE_PLUGIN_COOKIE"
	// envFD is the number of the inherited, connected Unix socket.
	envFD = "RINGWIRE_PLUGIN_FD"
	// envToken is the token the plugin presents to its host (launched and
	// external modes) or requires from it (remote mode, optional).
	envToken = "RINGWIRE_PLUGIN_TOKEN"
	// envConnect asks the plugin to dial a host Listener: "unix:/path" or
	// "tcp:host:port".
	envConnect = "RINGWIRE_CONNECT"
	// envListen asks the plugin to listen for its host: "tcp:host:port" (or
	// "unix:/path"). The plugin prints listeningPrefix and its address on
	// stdout once it listens.
	envListen = "RINGWIRE_LISTEN"
	// envTLSBundle holds the plugin's TLS material for TCP, as PEM or as
	// the path of a file holding it: a transport.CA ClientBundle in external
	// mode, a ServerBundle in remote mode.
	envTLSBundle = "RINGWIRE_TLS_BUNDLE"
)

// cookieValue is envCookie's value for this version of the launch protocol.
const cookieValue = "ringwire-plugin-v1"

// listeningPrefix starts the line a plugin in remote mode prints on stdout
// once it listens, followed by the network and address, e.g.
// "RINGWIRE_LISTENING tcp 127.0.0.1:40123".
const listeningPrefix = "RINGWIRE_LISTENING"

// fdNumber is the descriptor Launch hands the socket on (exec.Cmd.ExtraFiles
// starts at 3).
const fdNumber = 3

// maxBundle bounds a TLS bundle read from a file.
const maxBundle = 64 << 10

// envNames lists every variable of the launch protocol; Launch removes them
// from a child's inherited environment, so a host that is itself a plugin
// does not pass its own connection details on.
var envNames = []string{envCookie, envFD, envToken, envConnect, envListen, envTLSBundle, envLogLevel}

// ConnectEnv returns the environment variables that make Serve dial a host
// Listener at network ("unix" or "tcp") and addr, presenting token; for TCP,
// clientBundle is the plugin's transport.CA ClientBundle (PEM).
func ConnectEnv(network, addr string, token, clientBundle []byte) []string {
	env := []string{envConnect + "=" + network + ":" + addr}
	if len(token) > 0 {
		env = append(env, envToken+"="+string(token))
	}
	if len(clientBundle) > 0 {
		env = append(env, envTLSBundle+"="+string(clientBundle))
	}
	return env
}

// ListenEnv returns the environment variables that make Serve listen at
// network and addr for its host (remote mode), with serverBundle (a
// transport.CA ServerBundle) for TCP and, if not empty, a token the host must
// present.
func ListenEnv(network, addr string, token, serverBundle []byte) []string {
	env := []string{envListen + "=" + network + ":" + addr}
	if len(token) > 0 {
		env = append(env, envToken+"="+string(token))
	}
	if len(serverBundle) > 0 {
		env = append(env, envTLSBundle+"="+string(serverBundle))
	}
	return env
}

// parseAddress splits "unix:/path" or "tcp:host:port" (tcp4, tcp6 too).
func parseAddress(variable, s string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(s, ":")
	switch {
	case !ok || addr == "":
		return "", "", fmt.Errorf("%w: %s=%q: want unix:/path or tcp:host:port", ErrConfig, variable, s)
	case network == "unix", network == "tcp", network == "tcp4", network == "tcp6":
		return network, addr, nil
	}
	return "", "", fmt.Errorf("%w: %s=%q: unknown network %q (want unix or tcp)", ErrConfig, variable, s, network)
}

// tlsBundle returns the PEM in envTLSBundle: the value itself, or the
// contents of the file it names. It returns nil when the variable is unset.
func tlsBundle() ([]byte, error) {
	v := os.Getenv(envTLSBundle)
	if v == "" {
		return nil, nil
	}
	if strings.Contains(v, "-----BEGIN") {
		return []byte(v), nil
	}
	f, err := os.Open(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, envTLSBundle, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, envTLSBundle, err)
	}
	if len(b) > maxBundle {
		return nil, fmt.Errorf("%w: %s: %s is larger than %d bytes", ErrConfig, envTLSBundle, v, maxBundle)
	}
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%w: %s: %s holds no PEM", ErrConfig, envTLSBundle, v)
	}
	return b, nil
}

// childEnv is a launched plugin's environment: base (nil: this process's)
// without any launch-protocol variable, plus the cookie, the descriptor
// number and the token.
func childEnv(base []string, token string, level slog.Level) []string {
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+3)
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(envNames, name) {
			env = append(env, kv)
		}
	}
	return append(env, envCookie+"="+cookieValue, fmt.Sprintf("%s=%d", envFD, fdNumber), envToken+"="+token, envLogLevel+"="+level.String())
}
