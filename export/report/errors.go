package report

import "errors"

// Sentinel errors: errors.Is tells why.
var (
	// ErrSchemaFile: the --tool-schemas file is neither the Nexus schema object nor an
	// OpenAI tools list.
	ErrSchemaFile = errors.New("not a tool schema file")
	// ErrInputs: Options.Inputs does not name one path per input of the manifest.
	ErrInputs = errors.New("inputs must name one path per manifest input, in its order")
)
