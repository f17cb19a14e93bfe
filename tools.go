//go:build tools

// Package tools pins the module's dependencies while the packages that use them are written.
package tools

import (
	_ "github.com/apache/arrow-go/v18/arrow/ipc"
	_ "github.com/daulet/tokenizers"
	_ "github.com/gomlx/exceptions"
	_ "github.com/gomlx/gomlx/backends/simplego"
	_ "github.com/gomlx/gomlx/pkg/ml/train"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/olekukonko/tablewriter"
	_ "github.com/parquet-go/parquet-go"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "google.golang.org/protobuf/proto"
)
