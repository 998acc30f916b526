// Package api is the text service: the one definition that its plugin and
// every host import. Methods, codecs and the version live here and nowhere
// else; the contract the handshake checks is derived from them.
package api

import "github.com/ringwire/ringwire/plugin"

// guide:begin api

// Greeting is Greet's request and reply.
type Greeting struct {
	Name    string `json:"name"`
	Message string `json:"message,omitempty"`
}

var (
	// Upper returns its request in upper case (raw bytes both ways: no
	// encoding, no allocation).
	Upper = plugin.NewMethod("text.Upper", plugin.Raw(), plugin.Raw())
	// Greet greets someone by name (JSON both ways).
	Greet = plugin.NewMethod("text.Greet", plugin.JSON[Greeting](), plugin.JSON[Greeting]())
	// Words counts the words of its request.
	Words = plugin.NewMethod("text.Words", plugin.Raw(), plugin.JSON[int]())
)

// Service is version 1.1.0 of the text service. Adding a method is a minor
// version: hosts built against 1.0.0 keep working with this plugin.
var Service = plugin.NewService("text", "1.1.0", Upper, Greet, Words)

// guide:end api
