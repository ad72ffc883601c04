package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxFileBytes bounds one policy file (a ConfigMap holds at most 1 MiB in all).
const maxFileBytes = 1 << 20

// source is one policy file as read.
type source struct {
	name string // base name in the directory
	text []byte
}

// readDir reads the policy files of dir as a ConfigMap volume presents them: the top-level
// names (symbolic links into ..data, followed), skipping names that start with '.' (..data,
// ..2026_01_02_...), directories and *_test.rego. A missing dir holds no files. With tests,
// it reads the *_test.rego files too.
func readDir(dir string, tests bool) ([]source, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy dir: %w", err)
	}
	var out []source
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".rego") ||
			(!tests && strings.HasSuffix(name, "_test.rego")) {
			continue
		}
		text, err := readFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing, or a link left dangling mid-update
		}
		if errors.Is(err, errIsDir) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, source{name: name, text: text})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

var errIsDir = errors.New("is a directory")

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	if st.IsDir() {
		return nil, errIsDir
	}
	if st.Size() > maxFileBytes {
		return nil, fmt.Errorf("policy file %s: %d bytes, more than %d", filepath.Base(path), st.Size(), maxFileBytes)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	return text, nil
}

// version is the content hash of a set of files: names and contents, in name order.
func version(files []source) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s\x00%d:", len(f.name), f.name, len(f.text))
		h.Write(f.text)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// denied says which built-in functions a policy may not call: it runs inside a node agent with
// host network and privileges, on every pod change, so it must not reach the network or read
// the agent's environment (opa.runtime returns it).
func denied(builtin string) bool {
	switch builtin {
	case "http.send", "net.lookup_ip_addr", "opa.runtime":
		return true
	}
	return false
}

// newCompiler is the compiler of every policy: Rego v1, strict, without the denied built-ins.
// The Rego tests (TestRules) use it too, so they hold the shipped rules to the same rules.
func newCompiler() *ast.Compiler {
	caps := ast.CapabilitiesForThisVersion()
	builtins := caps.Builtins[:0:0]
	for _, b := range caps.Builtins {
		if !denied(b.Name) {
			builtins = append(builtins, b)
		}
	}
	caps.Builtins = builtins
	caps.AllowNet = []string{}
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithStrict(true).
		WithDefaultRegoVersion(ast.RegoV1)
}

// parse parses the files as Rego v1 and checks that each is part of package podcap (or below
// it): a file of another package would never be evaluated, which is always a mistake here.
func parse(files []source, tests bool) (map[string]*ast.Module, error) {
	modules := make(map[string]*ast.Module, len(files))
	var errs []error
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.name, string(f.text), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !tests || !strings.HasSuffix(f.name, "_test.rego") {
			if p := m.Package.Path.String(); p != "data.podcap" && !strings.HasPrefix(p, "data.podcap.") && !strings.HasPrefix(p, "data.podcap[") {
				errs = append(errs, fmt.Errorf("%s: package %s: a policy file must be in package podcap (or podcap.<name>)", f.name, strings.TrimPrefix(p, "data.")))
				continue
			}
		}
		modules[f.name] = m
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return modules, nil
}

// compile parses and compiles the files with newCompiler.
func compile(files []source) (*ast.Compiler, error) {
	modules, err := parse(files, false)
	if err != nil {
		return nil, err
	}
	c := newCompiler()
	if c.Compile(modules); c.Failed() {
		return nil, c.Errors
	}
	return c, nil
}
