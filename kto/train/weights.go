package train

import (
	"os"
	"path/filepath"
)

// resolveModel picks the model config: the tiny preset sized to the vocabulary, or a
// Hugging Face config.json.
func (s *runState) resolveModel(maxTokenID int) error {
	name := s.opts.Model
	if name == "" || name == TinyPreset {
		vocab := s.manifest.VocabSize
		if vocab == 0 {
			vocab = maxTokenID + 1
		}
		s.model = TinyConfig(vocab, s.shape.MaxLen)
		return s.model.Validate()
	}
	path := name
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	var err error
	s.model, err = LoadModelConfig(path)
	return err
}
