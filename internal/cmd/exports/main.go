// Command exports counts the exported identifiers of packages, as a user of
// them sees them: package-level types (aliases included), functions,
// constants and variables, plus every exported method in the method set of
// each exported type (of T and *T: methods declared on it, promoted from
// embedded fields, an interface's methods, and those of the type an alias
// names, wherever it is declared). Struct fields are not counted. Issue 11
// asks for the count across negotiate, transport, protocol and plugin to fall
// by half.
//
//	go run ./internal/cmd/exports negotiate transport protocol plugin ring shm
//
// EXPORTS_LIST=1 lists the names. The packages are read from the export
// data `go list -export` writes for the current GOOS; -C dir counts the
// module in dir (for a baseline checked out elsewhere).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
)

func main() {
	dir := flag.String("C", ".", "the module's directory")
	flag.Parse()
	if err := run(*dir, flag.Args(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "exports:", err)
		os.Exit(1)
	}
}

type listed struct {
	ImportPath string
	Export     string
	Dir        string
	Module     *struct{ Path string }
}

func run(dir string, pkgs []string, out io.Writer) error {
	if len(pkgs) == 0 {
		return errors.New("name the packages' directories")
	}
	args := []string{"list", "-export", "-deps", "-json=ImportPath,Export,Dir,Module"}
	for _, p := range pkgs {
		args = append(args, "./"+path.Clean(p))
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go list: %w", err)
	}
	exports := map[string]string{}
	var order []string // the named packages' import paths, in argument order
	byDir := map[string]string{}
	for dec := json.NewDecoder(bytes.NewReader(b)); ; {
		var l listed
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		exports[l.ImportPath] = l.Export
		byDir[l.Dir] = l.ImportPath
	}
	abs, err := absDir(dir)
	if err != nil {
		return err
	}
	for _, p := range pkgs {
		ip, ok := byDir[path.Join(abs, path.Clean(p))]
		if !ok {
			return fmt.Errorf("%s: not listed", p)
		}
		order = append(order, ip)
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(ip string) (io.ReadCloser, error) {
		f, ok := exports[ip]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", ip)
		}
		return os.Open(f)
	})
	total := 0
	for i, ip := range order {
		pkg, err := imp.Import(ip)
		if err != nil {
			return err
		}
		names := exported(pkg)
		fmt.Fprintf(out, "%-12s %4d\n", pkgs[i], len(names))
		if os.Getenv("EXPORTS_LIST") != "" {
			for _, n := range names {
				fmt.Fprintln(out, "  ", pkgs[i], n)
			}
		}
		total += len(names)
	}
	fmt.Fprintf(out, "%-12s %4d\n", "total", total)
	return nil
}

func absDir(dir string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}")
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// exported lists pkg's exported identifiers, sorted.
func exported(pkg *types.Package) []string {
	var names []string
	scope := pkg.Scope()
	for _, n := range scope.Names() {
		obj := scope.Lookup(n)
		if !obj.Exported() {
			continue
		}
		switch obj := obj.(type) {
		case *types.TypeName:
			names = append(names, "type "+n)
			if st, ok := obj.Type().Underlying().(*types.Struct); ok && os.Getenv("EXPORTS_FIELDS") != "" {
				for i := range st.NumFields() {
					if f := st.Field(i); f.Exported() {
						names = append(names, "field "+n+"."+f.Name())
					}
				}
			}
			t := obj.Type()
			if _, isIface := t.Underlying().(*types.Interface); !isIface {
				t = types.NewPointer(t)
			}
			ms := types.NewMethodSet(t)
			for i := range ms.Len() {
				if m := ms.At(i).Obj(); m.Exported() {
					names = append(names, "method "+n+"."+m.Name())
				}
			}
		case *types.Func:
			names = append(names, "func "+n)
		case *types.Const:
			names = append(names, "const "+n)
		case *types.Var:
			names = append(names, "var "+n)
		}
	}
	sort.Strings(names)
	return names
}
