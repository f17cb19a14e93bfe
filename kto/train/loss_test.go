package train

import (
	"math"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// testBackend is the pure-Go CPU backend, sequential ops (plain "go" hung on 2 cores).
var testBackend = func() func(t testing.TB) backends.Backend {
	var b backends.Backend
	return func(t testing.TB) backends.Backend {
		t.Helper()
		if b == nil {
			var err error
			b, err = simplego.New("ops_sequential")
			if err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
}()

// refKTO is TRL's KTOTrainer.kto_loss written out in float64 from the Python source
// (trl/trainer/kto_trainer.py): it returns the loss and the KL term z0.
func refKTO(lossType LossType, beta, wD, wU float64, policy, ref []float64, desirable []bool,
	policyKL, refKL []float64) (loss, kl float64) {
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	if lossType == LossKTO {
		for i := range policyKL {
			kl += policyKL[i] - refKL[i]
		}
		kl = math.Max(kl/float64(len(policyKL)), 0) // .mean().clamp(min=0)
	}
	var chosen, rejected []float64
	for i := range policy {
		r := policy[i] - ref[i]
		switch {
		case desirable[i] && lossType == LossKTO:
			chosen = append(chosen, 1-sigmoid(beta*(r-kl)))
		case desirable[i]:
			chosen = append(chosen, 1-sigmoid(beta*r))
		case lossType == LossKTO:
			rejected = append(rejected, 1-sigmoid(beta*(kl-r)))
		default:
			rejected = append(rejected, sigmoid(beta*r))
		}
	}
	var sum float64
	for _, l := range chosen {
		sum += wD * l
	}
	for _, l := range rejected {
		sum += wU * l
	}
	return sum / float64(len(chosen)+len(rejected)), kl
}

// TestLossMatchesTRL checks the loss, z0 and d loss/d policy log-probs of LossConfig.Build
// against refKTO, the gradient by central differences of refKTO (z0 held fixed: TRL
// detaches it, and the KL pairs are separate inputs).
func TestLossMatchesTRL(t *testing.T) {
	policy := []float64{-12.5, -30.25, -7.0, -18.0, -22.75}
	ref := []float64{-14.0, -29.0, -9.5, -17.25, -22.0}
	desirable := []bool{true, false, true, false, true}
	policyKL := []float64{-40.0, -35.5, -51.0, -28.0, -33.0}
	refKLPos := []float64{-45.0, -37.0, -50.0, -31.5, -36.0} // mean diff > 0: z0 > 0
	refKLNeg := []float64{-35.0, -33.0, -52.0, -25.0, -30.0} // mean diff < 0: clamped to 0
	cases := []struct {
		name     string
		lossType LossType
		beta     float64
		wD, wU   float64
		refKL    []float64
	}{
		{"kto", LossKTO, 0.1, 1, 1, refKLPos},
		{"kto_weighted", LossKTO, 0.5, 1.33, 0.75, refKLPos},
		{"kto_kl_clamped", LossKTO, 0.1, 1, 1, refKLNeg},
		{"apo_zero_unpaired", LossAPOZeroUnpaired, 0.2, 1.2, 0.9, refKLPos},
	}
	backend := testBackend(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := LossConfig{Type: tc.lossType, Beta: tc.beta, DesirableWeight: tc.wD, UndesirableWeight: tc.wU}
			n := len(policy)
			desF := make([]float64, n)
			ones := make([]float64, n)
			for i := range n {
				ones[i] = 1
				if desirable[i] {
					desF[i] = 1
				}
			}
			exec := graph.MustNewExec(backend, func(p, r, pKL, rKL, des, pres *graph.Node) []*graph.Node {
				out := cfg.Build(LossInputs{Policy: p, Ref: r, PolicyKL: pKL, RefKL: rKL,
					Desirable: des, Present: pres, KLPresent: pres})
				grad := graph.Gradient(out.Loss, p)[0]
				return []*graph.Node{out.Loss, out.KL, grad}
			})
			res := exec.MustExec(policy, ref, policyKL, tc.refKL, desF, ones)
			gotLoss := tensors.ToScalar[float64](res[0])
			gotKL := tensors.ToScalar[float64](res[1])
			gotGrad := tensors.MustCopyFlatData[float64](res[2])

			wantLoss, wantKL := refKTO(tc.lossType, tc.beta, tc.wD, tc.wU, policy, ref, desirable, policyKL, tc.refKL)
			if math.Abs(gotLoss-wantLoss) > 1e-12 {
				t.Errorf("loss = %.15g, TRL reference %.15g", gotLoss, wantLoss)
			}
			if math.Abs(gotKL-wantKL) > 1e-12 {
				t.Errorf("kl = %.15g, TRL reference %.15g", gotKL, wantKL)
			}
			const h = 1e-5
			for i := range n {
				up := append([]float64(nil), policy...)
				down := append([]float64(nil), policy...)
				up[i] += h
				down[i] -= h
				lu, _ := refKTO(tc.lossType, tc.beta, tc.wD, tc.wU, up, ref, desirable, policyKL, tc.refKL)
				ld, _ := refKTO(tc.lossType, tc.beta, tc.wD, tc.wU, down, ref, desirable, policyKL, tc.refKL)
				want := (lu - ld) / (2 * h)
				if math.Abs(gotGrad[i]-want) > 1e-8 {
					t.Errorf("d loss/d policy[%d] = %.12g, finite difference of TRL reference %.12g", i, gotGrad[i], want)
				}
			}
			if tc.name == "kto_kl_clamped" && wantKL != 0 {
				t.Fatalf("case meant to clamp, reference KL = %g", wantKL)
			}
		})
	}
}

// TestLossMasksAbsentSlots checks that empty slots of a short batch change nothing.
func TestLossMasksAbsentSlots(t *testing.T) {
	cfg := LossConfig{Type: LossKTO, Beta: 0.1, DesirableWeight: 1, UndesirableWeight: 1}
	exec := graph.MustNewExec(testBackend(t), func(p, r, pKL, rKL, des, pres *graph.Node) []*graph.Node {
		out := cfg.Build(LossInputs{Policy: p, Ref: r, PolicyKL: pKL, RefKL: rKL,
			Desirable: des, Present: pres, KLPresent: pres})
		return []*graph.Node{out.Loss, out.KL, out.ChosenCount, out.RejectedCount}
	})
	// Slot 2 is empty: garbage values must not leak in.
	res := exec.MustExec(
		[]float64{-10, -20, 999}, []float64{-11, -19, -999},
		[]float64{-30, -31, 555}, []float64{-32, -32, -555},
		[]float64{1, 0, 1}, []float64{1, 1, 0})
	wantLoss, wantKL := refKTO(LossKTO, 0.1, 1, 1, []float64{-10, -20}, []float64{-11, -19},
		[]bool{true, false}, []float64{-30, -31}, []float64{-32, -32})
	if got := tensors.ToScalar[float64](res[0]); math.Abs(got-wantLoss) > 1e-12 {
		t.Errorf("loss = %v, want %v", got, wantLoss)
	}
	if got := tensors.ToScalar[float64](res[1]); math.Abs(got-wantKL) > 1e-12 {
		t.Errorf("kl = %v, want %v", got, wantKL)
	}
	if c, r := tensors.ToScalar[float64](res[2]), tensors.ToScalar[float64](res[3]); c != 1 || r != 1 {
		t.Errorf("counts chosen=%v rejected=%v, want 1 and 1", c, r)
	}
}
