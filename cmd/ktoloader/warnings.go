package main

import (
	"fmt"
	"io"

	"github.com/ktoloader/ktoloader/export"
)

// printWarnings writes a finished run's warnings (manifest.warnings) to w, one a line: the
// run succeeded, exit 0, but what it wrote may not be what the user meant.
func printWarnings(w io.Writer, ws []export.Warning) {
	for _, x := range ws {
		fmt.Fprintf(w, "ktoloader: warning [%s]: %s\n", x.Code, x.Message)
	}
}
