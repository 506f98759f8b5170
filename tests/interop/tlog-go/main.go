// Command tlogverify is an independent verifier for the audit log's Merkle
// proofs and signed checkpoints. It reads JSON objects, one per line, on
// standard input and checks each with third-party implementations:
//
//   - RFC 6962 / RFC 9162 inclusion and consistency proofs with
//     github.com/transparency-dev/merkle (packages proof and rfc6962);
//   - C2SP signed notes with golang.org/x/mod/sumdb/note (Ed25519 keys),
//     whose body is then parsed as a C2SP tlog-checkpoint.
//
// It prints one line per input line ("ok <kind> ..." or "FAIL <kind>: ..."),
// then "N passed, M failed". The exit status is 0 when nothing failed, 1 when
// something did, and 2 when the input could not be read or the command line
// was wrong.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// hasher is the RFC 6962 SHA-256 tree hasher; every hash is this long.
var hasher = rfc6962.DefaultHasher

// record is one input line. Pointer fields tell "absent" from "zero".
// Fields are shared between kinds where the names coincide; fields that do
// not belong to a line's kind are rejected so that a misnamed field cannot
// silently go unchecked.
type record struct {
	Kind string `json:"kind"`

	// All kinds.
	Origin *string `json:"origin"`

	// inclusion
	LeafIndex *uint64 `json:"leaf_index"`
	LeafHash  *string `json:"leaf_hash"`

	// inclusion (required) and checkpoint (optional)
	TreeSize *uint64 `json:"tree_size"`
	RootHash *string `json:"root_hash"`

	// inclusion and consistency
	Proof *[]string `json:"proof"`

	// consistency
	Size1 *uint64 `json:"size1"`
	Size2 *uint64 `json:"size2"`
	Root1 *string `json:"root1"`
	Root2 *string `json:"root2"`

	// checkpoint
	Note  *string   `json:"note"`
	VKeys *[]string `json:"vkeys"`
}

// present lists the JSON names of the fields set in r (besides kind).
func (r *record) present() []string {
	var names []string
	add := func(set bool, name string) {
		if set {
			names = append(names, name)
		}
	}
	add(r.Origin != nil, "origin")
	add(r.LeafIndex != nil, "leaf_index")
	add(r.LeafHash != nil, "leaf_hash")
	add(r.TreeSize != nil, "tree_size")
	add(r.RootHash != nil, "root_hash")
	add(r.Proof != nil, "proof")
	add(r.Size1 != nil, "size1")
	add(r.Size2 != nil, "size2")
	add(r.Root1 != nil, "root1")
	add(r.Root2 != nil, "root2")
	add(r.Note != nil, "note")
	add(r.VKeys != nil, "vkeys")
	return names
}

// allowed is, per kind, the set of fields a line of that kind may carry.
var allowed = map[string]map[string]bool{
	"inclusion":   set("origin", "leaf_index", "tree_size", "leaf_hash", "root_hash", "proof"),
	"consistency": set("origin", "size1", "size2", "root1", "root2", "proof"),
	"checkpoint":  set("origin", "note", "vkeys", "tree_size", "root_hash"),
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// decodeB64 decodes standard, padded base64 and insists on the canonical
// encoding (no embedded newlines, no non-zero padding bits).
func decodeB64(field, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("%s: not canonical standard padded base64", field)
	}
	return b, nil
}

// decodeHash decodes a base64 hash and checks it has the hasher's size.
func decodeHash(field, s string) ([]byte, error) {
	b, err := decodeB64(field, s)
	if err != nil {
		return nil, err
	}
	if len(b) != hasher.Size() {
		return nil, fmt.Errorf("%s: %d bytes, want %d", field, len(b), hasher.Size())
	}
	return b, nil
}

func decodeProof(p []string) ([][]byte, error) {
	out := make([][]byte, len(p))
	for i, s := range p {
		h, err := decodeHash(fmt.Sprintf("proof[%d]", i), s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func missing(names ...string) error {
	return fmt.Errorf("missing field(s): %s", strings.Join(names, ", "))
}

// describeErr turns a library error into one line of text.
func describeErr(err error) string {
	var rm proof.RootMismatchError
	if errors.As(err, &rm) {
		return fmt.Sprintf("root mismatch: calculated %s, expected %s",
			base64.StdEncoding.EncodeToString(rm.CalculatedRoot),
			base64.StdEncoding.EncodeToString(rm.ExpectedRoot))
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

func originPrefix(o *string) string {
	if o == nil {
		return ""
	}
	return fmt.Sprintf("origin %q: ", *o)
}

func verifyInclusion(r *record) (string, error) {
	var miss []string
	if r.LeafIndex == nil {
		miss = append(miss, "leaf_index")
	}
	if r.TreeSize == nil {
		miss = append(miss, "tree_size")
	}
	if r.LeafHash == nil {
		miss = append(miss, "leaf_hash")
	}
	if r.RootHash == nil {
		miss = append(miss, "root_hash")
	}
	if r.Proof == nil {
		miss = append(miss, "proof")
	}
	if len(miss) > 0 {
		return "", missing(miss...)
	}
	leaf, err := decodeHash("leaf_hash", *r.LeafHash)
	if err != nil {
		return "", err
	}
	root, err := decodeHash("root_hash", *r.RootHash)
	if err != nil {
		return "", err
	}
	p, err := decodeProof(*r.Proof)
	if err != nil {
		return "", err
	}
	if err := proof.VerifyInclusion(hasher, *r.LeafIndex, *r.TreeSize, leaf, p, root); err != nil {
		return "", errors.New(describeErr(err))
	}
	return fmt.Sprintf("%sleaf %d in tree of size %d (%d proof hashes)",
		originPrefix(r.Origin), *r.LeafIndex, *r.TreeSize, len(p)), nil
}

func verifyConsistency(r *record) (string, error) {
	var miss []string
	if r.Size1 == nil {
		miss = append(miss, "size1")
	}
	if r.Size2 == nil {
		miss = append(miss, "size2")
	}
	if r.Root1 == nil {
		miss = append(miss, "root1")
	}
	if r.Root2 == nil {
		miss = append(miss, "root2")
	}
	if r.Proof == nil {
		miss = append(miss, "proof")
	}
	if len(miss) > 0 {
		return "", missing(miss...)
	}
	root1, err := decodeHash("root1", *r.Root1)
	if err != nil {
		return "", err
	}
	root2, err := decodeHash("root2", *r.Root2)
	if err != nil {
		return "", err
	}
	p, err := decodeProof(*r.Proof)
	if err != nil {
		return "", err
	}
	if err := proof.VerifyConsistency(hasher, *r.Size1, *r.Size2, p, root1, root2); err != nil {
		return "", errors.New(describeErr(err))
	}
	return fmt.Sprintf("%stree size %d -> %d (%d proof hashes)",
		originPrefix(r.Origin), *r.Size1, *r.Size2, len(p)), nil
}

// checkpoint is a parsed C2SP tlog-checkpoint note body.
type checkpoint struct {
	Origin     string
	Size       uint64
	Hash       []byte
	Extensions []string
}

// parseCheckpoint parses a note body (text up to and including the newline
// before the blank line) per https://c2sp.org/tlog-checkpoint.
func parseCheckpoint(text string) (*checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("checkpoint body does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return nil, fmt.Errorf("checkpoint body has %d lines, want at least 3", len(lines))
	}
	for i, l := range lines {
		if l == "" {
			return nil, fmt.Errorf("checkpoint body line %d is empty", i+1)
		}
	}
	c := &checkpoint{Origin: lines[0], Extensions: lines[3:]}

	sizeLine := lines[1]
	for _, ch := range sizeLine {
		if ch < '0' || ch > '9' {
			return nil, fmt.Errorf("checkpoint tree size %q is not ASCII decimal", sizeLine)
		}
	}
	if len(sizeLine) > 1 && sizeLine[0] == '0' {
		return nil, fmt.Errorf("checkpoint tree size %q has a leading zero", sizeLine)
	}
	size, err := strconv.ParseUint(sizeLine, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("checkpoint tree size %q: out of range", sizeLine)
	}
	c.Size = size

	h, err := decodeHash("checkpoint root hash", lines[2])
	if err != nil {
		return nil, err
	}
	c.Hash = h
	return c, nil
}

func verifyCheckpoint(r *record) (string, error) {
	var miss []string
	if r.Note == nil {
		miss = append(miss, "note")
	}
	if r.VKeys == nil {
		miss = append(miss, "vkeys")
	}
	if len(miss) > 0 {
		return "", missing(miss...)
	}
	if len(*r.VKeys) == 0 {
		return "", errors.New("vkeys is empty")
	}
	var wantRoot []byte
	if r.RootHash != nil {
		h, err := decodeHash("root_hash", *r.RootHash)
		if err != nil {
			return "", err
		}
		wantRoot = h
	}

	var verifiers []note.Verifier
	seen := map[string]bool{}
	for i, k := range *r.VKeys {
		if seen[k] {
			continue // the same key twice is harmless; note would call it ambiguous
		}
		seen[k] = true
		v, err := note.NewVerifier(k)
		if err != nil {
			return "", fmt.Errorf("vkeys[%d]: %v", i, err)
		}
		verifiers = append(verifiers, v)
	}

	n, err := note.Open([]byte(*r.Note), note.VerifierList(verifiers...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			var sigs []string
			for _, s := range unverified.Note.UnverifiedSigs {
				sigs = append(sigs, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
			}
			return "", fmt.Errorf("no signature by a known key (note signed by: %s)", strings.Join(sigs, ", "))
		}
		return "", fmt.Errorf("note: %s", describeErr(err))
	}

	c, err := parseCheckpoint(n.Text)
	if err != nil {
		return "", err
	}
	if r.Origin != nil && c.Origin != *r.Origin {
		return "", fmt.Errorf("origin is %q, want %q", c.Origin, *r.Origin)
	}
	if r.TreeSize != nil && c.Size != *r.TreeSize {
		return "", fmt.Errorf("tree size is %d, want %d", c.Size, *r.TreeSize)
	}
	if wantRoot != nil && !bytes.Equal(c.Hash, wantRoot) {
		return "", fmt.Errorf("root hash is %s, want %s",
			base64.StdEncoding.EncodeToString(c.Hash), *r.RootHash)
	}

	var signers []string
	for _, s := range n.Sigs {
		signers = append(signers, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	desc := fmt.Sprintf("origin %q size %d root %s, signed by %s",
		c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash), strings.Join(signers, ", "))
	if len(c.Extensions) > 0 {
		desc += fmt.Sprintf(", %d extension line(s)", len(c.Extensions))
	}
	if len(n.UnverifiedSigs) > 0 {
		desc += fmt.Sprintf(", %d signature(s) by unknown keys ignored", len(n.UnverifiedSigs))
	}
	return desc, nil
}

// verifyLine checks one input line. kind is the line's kind as far as it
// could be told ("malformed" when the line is not a JSON object with a string
// kind); desc is a short description on success.
func verifyLine(line []byte) (kind, desc string, err error) {
	var head struct {
		Kind *string `json:"kind"`
	}
	// Decode only the first JSON value here; data after it is reported
	// below, once the kind is known.
	if err := json.NewDecoder(bytes.NewReader(line)).Decode(&head); err != nil {
		return "malformed", "", fmt.Errorf("not a JSON object: %s", describeErr(err))
	}
	if head.Kind == nil {
		return "malformed", "", errors.New(`no "kind" field`)
	}
	kind = *head.Kind
	fields, ok := allowed[kind]
	if !ok {
		return kind, "", fmt.Errorf("unknown kind %q", kind)
	}

	var r record
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return kind, "", fmt.Errorf("malformed line: %s", describeErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return kind, "", errors.New("malformed line: data after the JSON object")
	}
	for _, name := range r.present() {
		if !fields[name] {
			return kind, "", fmt.Errorf("field %q does not belong to kind %q", name, kind)
		}
	}

	switch kind {
	case "inclusion":
		desc, err = verifyInclusion(&r)
	case "consistency":
		desc, err = verifyConsistency(&r)
	case "checkpoint":
		desc, err = verifyCheckpoint(&r)
	}
	return kind, desc, err
}

// run verifies every non-blank line of in, writes one result line per input
// line and the summary to out, and returns the counts. A read error is
// returned as err (after the summary of what was read).
func run(in io.Reader, out io.Writer) (passed, failed int, err error) {
	br := bufio.NewReader(in)
	w := bufio.NewWriter(out)
	defer w.Flush()
	for lineNo := 1; ; lineNo++ {
		line, rerr := br.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			err = rerr
			break
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			kind, desc, verr := verifyLine(trimmed)
			if verr != nil {
				failed++
				fmt.Fprintf(w, "FAIL %s: line %d: %v\n", kind, lineNo, verr)
			} else {
				passed++
				fmt.Fprintf(w, "ok %s line %d: %s\n", kind, lineNo, desc)
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", passed, failed)
	return passed, failed, err
}

// realMain is main without os.Exit, for tests.
func realMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: tlogverify < lines.jsonl")
		fmt.Fprintln(stderr, "  reads inclusion / consistency / checkpoint JSON lines on stdin; see README.md")
		return 2
	}
	_, failed, err := run(stdin, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "tlogverify: reading input: %v\n", err)
		return 2
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
