// Package mpproto holds the Go types of the MetaProtocol proxy's filter configurations that
// Meltemi writes (generated from the .proto files here by gen.sh). They are not in
// go-control-plane; tests decode generated EnvoyFilters into them to check the encoding.
package mpproto

//go:generate ./gen.sh
