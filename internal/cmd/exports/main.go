// Command exports counts the exported identifiers of packages: types,
// functions, methods of exported types, constants and variables declared in
// their non-test Go files (for every GOOS). Issue 11 asks for the count
// across negotiate, transport, protocol and plugin to fall by half.
//
//	go run ./internal/cmd/exports negotiate transport protocol plugin ring shm
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	total := 0
	for _, dir := range os.Args[1:] {
		n, err := count(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "exports:", err)
			os.Exit(1)
		}
		fmt.Printf("%-12s %4d\n", dir, n)
		total += n
	}
	fmt.Printf("%-12s %4d\n", "total", total)
}

func count(dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{} // one identifier declared for several GOOS counts once
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return 0, err
		}
		if af.Name.Name == "main" {
			continue
		}
		for _, d := range af.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv != nil {
					recv := recvName(d.Recv.List[0].Type)
					if !ast.IsExported(recv) {
						continue
					}
					seen["method "+recv+"."+d.Name.Name] = true
				} else {
					seen["func "+d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							seen["type "+s.Name.Name] = true
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								seen[d.Tok.String()+" "+n.Name] = true
							}
						}
					}
				}
			}
		}
	}
	if os.Getenv("EXPORTS_LIST") != "" {
		var names []string
		for n := range seen {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Println("  ", dir, n)
		}
	}
	return len(seen), nil
}

func recvName(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}
