// Package layout holds tests of the repository's structure: the import
// rules of DEVELOPERS.md (firmware/ never imports gateway code) and that
// every package has a doc comment. It has no code and imports nothing.
package layout
