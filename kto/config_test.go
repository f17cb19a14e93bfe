package kto

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	good := Config{BatchSize: 2, MaxLen: 2, TestFrac: 0.5, Truncate: TruncateKeepEnd, SFTLoss: SFTLossAllAssistant, PadID: 2, SFTWindow: 1}
	if err := good.Validate(); err != nil {
		t.Fatalf("%+v: %v", good, err)
	}
	cases := []struct {
		cfg   Config
		field string
	}{
		{Config{BatchSize: 1}, "BatchSize"},
		{Config{BatchSize: -8}, "BatchSize"},
		{Config{MaxLen: 1}, "MaxLen"},
		{Config{MaxLen: -1}, "MaxLen"},
		{Config{MaxLen: math.MaxInt32 + 1}, "MaxLen"},
		{Config{TestFrac: 1}, "TestFrac"},
		{Config{TestFrac: -0.01}, "TestFrac"},
		{Config{TestFrac: math.NaN()}, "TestFrac"},
		{Config{Truncate: "keep_end"}, "Truncate"},
		{Config{SFTLoss: "all"}, "SFTLoss"},
		{Config{PadID: -1}, "PadID"},
		{Config{SFTWindow: -1}, "SFTWindow"},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		var ce *ConfigError
		if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: error %v, want a ConfigError on %s", tc.cfg, err, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("message %q does not name %s", err, tc.field)
		}
	}
}
