package plugin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Services and contracts that evolve.
//
// Hosts and plugins present one fixed contract in the handshake
// (serviceContract). A plugin that sets Plugin.Service, and a host that sets
// Config.Service, declare their methods in its constants:
//
//	ringwire.service     "name version" of the service (both sides)
//	ringwire.versions    the plugin versions the host accepts (host)
//	ringwire.serves.N    the plugin's methods, one "name<TAB>signature" per line (plugin)
//	ringwire.needs.N     the methods the host calls, the same way (host)
//
// Both sides then reach the same verdict (compatible): the host works with
// any plugin of the same service, at a version it accepts, that serves every
// method it needs with the same signature, whatever else the plugin serves.
// A host without a Service needs nothing; a host with one refuses a plugin
// that declares none.

// serviceContract is the contract hash both sides present when they declare
// services.
var serviceContract = func() []byte {
	h := sha256.Sum256([]byte("ringwire contract v2: service tables in the handshake constants"))
	return h[:]
}()

const (
	serviceKey  = reservedPrefix + "service"
	versionsKey = reservedPrefix + "versions"
	servesKey   = reservedPrefix + "serves."
	needsKey    = reservedPrefix + "needs."
)

// putTable stores methods in c under prefix+"0", prefix+"1"..., each value
// within the handshake's bound on a constant.
func putTable(c map[string]string, prefix string, methods []rpc.MethodInfo) {
	var b strings.Builder
	n := 0
	flush := func() {
		c[prefix+strconv.Itoa(n)] = b.String()
		b.Reset()
		n++
	}
	for _, m := range methods {
		line := m.Name + "\t" + m.Signature + "\n"
		if b.Len()+len(line) > handshake.MaxConstantValue {
			flush()
		}
		b.WriteString(line)
	}
	flush()
}

// table reads what putTable stored. ok is false if the peer declared none.
func table(c map[string]string, prefix string) (methods []rpc.MethodInfo, ok bool, err error) {
	for n := 0; ; n++ {
		v, found := c[prefix+strconv.Itoa(n)]
		if !found {
			return methods, n > 0, nil
		}
		for line := range strings.Lines(v) {
			name, sig, found := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
			if !found || name == "" {
				return nil, true, fmt.Errorf("%w: malformed method table entry %q", ErrContractMismatch, line)
			}
			methods = append(methods, rpc.MethodInfo{Name: name, Signature: sig})
		}
	}
}

// declaration is one side's service declaration, as read from constants.
type declaration struct {
	name, version string
	versions      string // the host's accepted plugin versions
	methods       []rpc.MethodInfo
}

func readDeclaration(c map[string]string, prefix string) (d declaration, ok bool, err error) {
	d.methods, ok, err = table(c, prefix)
	if !ok || err != nil {
		return d, ok, err
	}
	d.name, d.version, _ = strings.Cut(c[serviceKey], " ")
	d.versions = c[versionsKey]
	return d, true, nil
}

// compatible is the verdict on a host that needs need from a plugin that
// serves have; both sides compute it.
func compatible(need, have declaration) error {
	if need.name != have.name {
		return fmt.Errorf("%w: the host needs service %q, the plugin serves %q", ErrContractMismatch, need.name, have.name)
	}
	if ok, err := acceptsVersion(need, have.version); err != nil {
		return fmt.Errorf("%w: %w", ErrContractMismatch, err)
	} else if !ok {
		return fmt.Errorf("%w: the host (%s %s) accepts plugin versions %s, the plugin serves %s %s",
			ErrContractMismatch, need.name, need.version, versionsText(need), have.name, have.version)
	}
	served := map[string]string{}
	for _, m := range have.methods {
		served[m.Name] = m.Signature
	}
	var missing, differ []string
	for _, m := range need.methods {
		sig, ok := served[m.Name]
		switch {
		case !ok:
			missing = append(missing, m.String())
		case sig != m.Signature:
			differ = append(differ, fmt.Sprintf("%s (host %s, plugin %s)", m.Name, sigText(m.Signature), sigText(sig)))
		}
	}
	if len(missing) == 0 && len(differ) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing on the plugin: "+strings.Join(missing, ", "))
	}
	if len(differ) > 0 {
		parts = append(parts, "other signature: "+strings.Join(differ, "; "))
	}
	return fmt.Errorf("%w: the plugin (%s %s) does not serve what the host (%s %s) needs: %s",
		ErrContractMismatch, have.name, have.version, need.name, need.version, strings.Join(parts, "; "))
}

func sigText(sig string) string {
	if sig == "" {
		return "untyped"
	}
	return sig
}

func versionsText(d declaration) string {
	if d.versions != "" {
		return d.versions
	}
	if major, err := parseVersion(d.version); err == nil {
		return fmt.Sprintf(">=%d.0.0 <%d.0.0", major[0], major[0]+1)
	}
	return "= " + d.version
}

// acceptsVersion reports whether a host with declaration need accepts a
// plugin at version v: v satisfies every comparator of need.versions
// (">=1.2 <2"), or, without any, has need.version's major version.
func acceptsVersion(need declaration, v string) (bool, error) {
	want, werr := parseVersion(need.version)
	if need.versions == "" && werr != nil {
		return need.version == v, nil // not semantic versions: equal ones
	}
	have, err := parseVersion(v)
	if err != nil {
		return false, fmt.Errorf("the plugin's version: %w", err)
	}
	if need.versions == "" {
		return want[0] == have[0], nil
	}
	for _, c := range strings.FieldsFunc(need.versions, func(r rune) bool { return r == ' ' || r == ',' }) {
		op := strings.TrimRight(c, "0123456789.v")
		bound, err := parseVersion(c[len(op):])
		if err != nil {
			return false, fmt.Errorf("the host's accepted versions %q: %w", need.versions, err)
		}
		cmp := slices.Compare(have[:], bound[:])
		var ok bool
		switch op {
		case ">=":
			ok = cmp >= 0
		case ">":
			ok = cmp > 0
		case "<=":
			ok = cmp <= 0
		case "<":
			ok = cmp < 0
		case "=", "":
			ok = cmp == 0
		default:
			return false, fmt.Errorf("the host's accepted versions %q: unknown comparison %q", need.versions, op)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// parseVersion parses "1", "1.2" or "1.2.3", with an optional leading "v"
// and anything after a '-' or '+' ignored.
func parseVersion(s string) ([3]int, error) {
	var v [3]int
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 3 {
		return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", s)
		}
		v[i] = n
	}
	return v, nil
}

// declare adds the host's service declaration, if any, to t.
func (c *Config) declare(t *transport.Config) {
	t.Contract = serviceContract
	if c.Service == nil {
		return
	}
	consts := map[string]string{}
	for k, v := range t.Constants {
		consts[k] = v
	}
	consts[serviceKey] = c.Service.Name() + " " + c.Service.Version()
	if c.Versions != "" {
		consts[versionsKey] = c.Versions
	}
	putTable(consts, needsKey, rpc.MethodsOf(c.Service))
	t.Constants = consts
}

// admit is the host's verdict on a plugin whose handshake gave info.
func (c *Config) admit(info transport.Info) error {
	if c.Service == nil {
		return nil
	}
	have, ok, err := readDeclaration(info.Peer.Constants, servesKey)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the plugin declares no service (the host needs %s %s)", ErrContractMismatch, c.Service.Name(), c.Service.Version())
	}
	need := declaration{name: c.Service.Name(), version: c.Service.Version(), versions: c.Versions, methods: rpc.MethodsOf(c.Service)}
	return compatible(need, have)
}

// admit is the plugin's verdict on a host whose handshake gave info (the
// same as the host's).
func (p *Plugin) admit(info transport.Info) error {
	if p.Service == nil {
		return nil
	}
	need, ok, err := readDeclaration(info.Peer.Constants, needsKey)
	if err != nil || !ok {
		return err // a host with a plain contract matched it exactly
	}
	return compatible(need, p.declaration())
}

func (p *Plugin) declaration() declaration {
	return declaration{name: p.Service.Name(), version: p.Service.Version(), methods: rpc.InfosOf(p.mux())}
}

// hint explains a contract mismatch that the handshake itself found: the
// other side presented another contract hash than serviceContract, so it is
// not a plugin runtime of this protocol.
func hint(err error) error {
	if err == nil || !errors.Is(err, ErrContractMismatch) {
		return err
	}
	return fmt.Errorf("%w (the other side is not a ringwire plugin or host of this version: rebuild it with this one)", err)
}
