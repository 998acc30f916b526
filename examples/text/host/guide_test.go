package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringwire/ringwire/examples/text/api"
	"github.com/ringwire/ringwire/plugin"
)

// block is a fenced code block of docs/guide.md: its info string and text.
type block struct {
	info, text string
	line       int
}

func guideBlocks(t *testing.T, path string) []block {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	var cur *block
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &block{info: strings.TrimPrefix(l, "```"), line: n}
		case cur != nil && l == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += l + "\n"
		case (strings.HasPrefix(l, "    ") || strings.HasPrefix(l, "\t")) && strings.TrimSpace(l) != "":
			// The guide indents list continuations by two spaces; four
			// would make an indented code block, which nothing checks.
			t.Errorf("guide line %d: an indented code block, which no test checks", n)
		}
	}
	if cur != nil {
		t.Fatalf("guide line %d: unterminated code block", cur.line)
	}
	return out
}

// region returns the lines of file between "// guide:begin name" and
// "// guide:end name".
func region(t *testing.T, file, name string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	begin, end := "// guide:begin "+name+"\n", "// guide:end "+name+"\n"
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no region %q", file, name)
	}
	return strings.Trim(s[i+len(begin):j], "\n") + "\n"
}

// TestGuide checks every code block of docs/guide.md: Go blocks are regions
// of real files (and must equal them), the commands are run, their output
// and the mismatch error are produced here and compared.
func TestGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example (-short)")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := guideBlocks(t, filepath.Join(root, "docs/guide.md"))
	bin := filepath.Join(t.TempDir(), "text-plugin")
	var output string
	checked := 0
	for _, b := range blocks {
		kind, arg, _ := strings.Cut(b.info, " ")
		switch {
		case kind == "go" && strings.HasPrefix(arg, "file="):
			file, name, _ := strings.Cut(strings.TrimPrefix(arg, "file="), "#")
			if want := region(t, filepath.Join(root, file), name); b.text != want {
				t.Errorf("guide line %d: the block differs from %s#%s:\n%s\nthe file has:\n%s", b.line, file, name, b.text, want)
			}
		case kind == "text" && arg == "layout":
			for _, l := range strings.Split(strings.TrimSpace(b.text), "\n") {
				dir := strings.Fields(l)[0]
				if dir == "examples/text/" {
					continue
				}
				if fi, err := os.Stat(filepath.Join(root, "examples/text", dir)); err != nil || !fi.IsDir() {
					t.Errorf("guide line %d: examples/text/%s is not a directory", b.line, dir)
				}
			}
		case kind == "sh" && arg == "run":
			for _, cmd := range strings.Split(strings.TrimSpace(b.text), "\n") {
				cmd = strings.ReplaceAll(cmd, "/tmp/text-plugin", bin)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				c := exec.CommandContext(ctx, "bash", "-c", cmd)
				c.Dir = root
				var stderr strings.Builder
				c.Stderr = &stderr
				out, err := c.Output()
				cancel()
				if err != nil {
					t.Fatalf("guide line %d: %s: %v\n%s", b.line, cmd, err, stderr.String())
				}
				output += string(out)
			}
		case kind == "text" && arg == "output":
			if output == "" {
				t.Errorf("guide line %d: an output block before the commands that produce it", b.line)
			} else if b.text != output {
				t.Errorf("guide line %d: the commands printed\n%s\nthe guide shows\n%s", b.line, output, b.text)
			}
		case kind == "text" && arg == "mismatch":
			err := mismatch(t, bin)
			if got := strings.Join(strings.Fields(b.text), " "); err == nil || err.Error() != got {
				t.Errorf("guide line %d: launching with a 1.2.0 host gave\n%v\nthe guide shows\n%s", b.line, err, got)
			}
			if !errors.Is(err, plugin.ErrContractMismatch) {
				t.Errorf("%v is not ErrContractMismatch", err)
			}
		default:
			t.Errorf("guide line %d: block %q is neither a file region nor checked by this test", b.line, b.info)
			continue
		}
		checked++
	}
	if checked < 7 {
		t.Errorf("only %d blocks checked", checked)
	}
}

// mismatch launches the plugin at bin for a host whose api is 1.2.0 with
// one more method.
func mismatch(t *testing.T, bin string) error {
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the plugin binary was not built: %v", err)
	}
	shout := plugin.NewMethod("text.Shout", plugin.Raw(), plugin.Raw())
	v12 := plugin.NewService("text", "1.2.0", api.Upper, api.Greet, api.Words, shout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := plugin.Launch(ctx, &plugin.Config{Name: "text", Path: bin, Service: v12})
	if err == nil {
		c.Close()
	}
	return err
}
