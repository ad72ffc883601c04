package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, token, off string // off: part of why the API is off
	}{
		{"no flag", "", "", "no --api-token-file"},
		{"missing file", filepath.Join(dir, "missing"), "", "does not exist"},
		{"empty file", write("empty", "\n"), "", "0 bytes, shorter than the minimum of 16"},
		{"short token", write("short", "s3cret\n"), "", "6 bytes, shorter than the minimum of 16"},
		{"15 bytes", write("fifteen", "0123456789abcde"), "", "15 bytes"},
		{"16 bytes, trimmed", write("ok", "  0123456789abcdef\n"), "0123456789abcdef", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token, off, err := readToken(tc.path)
			if err != nil || token != tc.token || (tc.off == "") != (off == "") || !strings.Contains(off, tc.off) {
				t.Fatalf("readToken = %q, %q, %v; want %q and a reason with %q", token, off, err, tc.token, tc.off)
			}
		})
	}
	if _, _, err := readToken(dir); err == nil {
		t.Fatal("a directory read as a token file")
	}
}
