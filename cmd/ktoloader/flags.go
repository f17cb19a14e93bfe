package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// optionalValueKey annotates a string flag whose value may be left out: the annotation holds
// what a bare flag stands for. pflag's own NoOptDefVal cannot do this for us: with it,
// "--report /tmp/r.html" leaves the path behind as a stray argument and the help prints the
// type as string[="-"].
const optionalValueKey = "ktoloader/optional-value"

// optionalValue makes the string flag name take an optional value: "--name VALUE",
// "--name=VALUE", and "--name" alone (at the end, or before another flag) meaning bare. Only
// for commands that take no positional arguments, so that a word after the flag can only be
// its value.
func optionalValue(fs *pflag.FlagSet, name, bare string) {
	if err := fs.SetAnnotation(name, optionalValueKey, []string{bare}); err != nil {
		panic(err) // a programming error: the flag is defined just before
	}
}

// expandOptionalValues rewrites each bare optional-value flag of the command of root that
// args name into "--flag=BARE" and leaves everything else as it is; pflag then parses
// "--flag VALUE" as an ordinary string flag.
func expandOptionalValues(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == root {
		return args
	}
	bare := map[string]string{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if v, ok := f.Annotations[optionalValueKey]; ok && len(v) == 1 {
			bare["--"+f.Name] = v[0]
		}
	})
	if len(bare) == 0 {
		return args
	}
	var out []string
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if v, ok := bare[a]; ok {
			next := ""
			if i+1 < len(args) {
				next = args[i+1]
			}
			if i+1 == len(args) || strings.HasPrefix(next, "-") && next != "-" {
				a += "=" + v
			}
		}
		out = append(out, a)
	}
	return out
}
