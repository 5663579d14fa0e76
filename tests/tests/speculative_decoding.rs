//! Exactness of speculative decoding on real models (the default model and the tiny Hugging Face
//! fixtures of every architecture): the logits of a position verified inside a multi-token step (a chain,
//! or a token tree with decoy branches and a compacted KV cache afterwards) are bit-identical to those of
//! decoding it on its own, and greedy speculative generation emits exactly the tokens of plain greedy
//! generation for every drafter.

use std::path::{Path, PathBuf};

use kiln_runtime::decoding::{
    Drafter, ModelDrafter, NgramConfig, NgramDrafter, TokenTree, generate_speculative, run_step,
};
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, TextTokenizer, generate};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default model and every HF fixture, with their vocabulary sizes.
fn models() -> Vec<(String, PathBuf)> {
    let mut all = vec![("default".to_string(), repo().join("models/default"))];
    for arch in ["gemma3", "gpt2", "llama", "mistral", "qwen2", "qwen3"] {
        all.push((arch.to_string(), repo().join("tests/fixtures/hf").join(arch)));
    }
    all
}

fn executor(path: &Path) -> (CpuExecutor, usize) {
    let model = kiln::load_model(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vocab = model.meta.vocab_size as usize;
    (CpuExecutor::new(model.graph, model.weights).unwrap(), vocab)
}

/// Asserts two logits rows are bit for bit the same, naming the first element that is not.
#[track_caller]
fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
        panic!(
            "{what}: element {i} is {} (bits {:#x}), not {} (bits {:#x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// Runs one step at consecutive positions from `first`.
fn step(exec: &mut CpuExecutor, ids: &[u32], first: i64) -> Vec<f32> {
    let positions: Vec<i64> = (first..first + ids.len() as i64).collect();
    run_step(exec, ids, &positions, None).unwrap().0
}

#[test]
fn verified_positions_are_bit_identical_to_decoded_ones() {
    for (name, path) in models() {
        let (mut exec, vocab) = executor(&path);
        let tokens: Vec<u32> = (0..28u32).map(|i| (i * 37 + 11) % vocab as u32).collect();
        let prefill = 8;

        // Reference: decode tokens prefill.. one at a time.
        exec.reset();
        step(&mut exec, &tokens[..prefill], 0);
        let mut decoded = Vec::new();
        for (i, &t) in tokens.iter().enumerate().skip(prefill) {
            decoded.push(step(&mut exec, &[t], i as i64));
        }

        // A chain of 20 tokens verified in one step.
        exec.reset();
        step(&mut exec, &tokens[..prefill], 0);
        let chain = step(&mut exec, &tokens[prefill..], prefill as i64);
        for (j, row) in chain.chunks(vocab).enumerate() {
            assert_bits_eq(row, &decoded[j], &format!("{name}: chain row {j} differs from decoding it"));
        }

        // A tree whose true path (tokens[prefill + 1..prefill + 13]) is interleaved with decoy branches, so
        // that the path's nodes are not contiguous in the step; then compaction and more decode steps.
        exec.reset();
        step(&mut exec, &tokens[..prefill], 0);
        let root = prefill;
        let path = &tokens[root + 1..root + 13];
        let mut tree = TokenTree::new();
        for d in 0..path.len() {
            let decoy = (path[d] + 1) % vocab as u32;
            if d % 2 == 0 {
                tree.insert_path(&[&path[..d], &[decoy, path[d]]].concat(), usize::MAX);
            }
            tree.insert_path(&path[..=d], usize::MAX);
            if d % 3 == 1 {
                tree.insert_path(&[&path[..d], &[decoy]].concat(), usize::MAX);
            }
        }
        assert!(tree.len() > path.len() + 6 && tree.len() < 63, "{name}: the tree has {} nodes", tree.len());
        let mask = tree.step_mask();
        let positions = tree.step_positions(root as i64);
        let (logits, _) = run_step(&mut exec, &tree.step_tokens(tokens[root]), &positions, Some(&mask)).unwrap();
        assert_bits_eq(&logits[..vocab], &decoded[0], &format!("{name}: the root row differs"));
        let mut at = None;
        let mut kept = Vec::new();
        for (d, &t) in path.iter().enumerate() {
            let node = tree.child(at, t).expect("the path is in the tree");
            let row = &logits[(node + 1) * vocab..(node + 2) * vocab];
            assert_bits_eq(row, &decoded[d + 1], &format!("{name}: tree node at depth {} differs", d + 1));
            kept.push(root + 1 + node);
            at = Some(node);
        }
        assert!(kept.windows(2).any(|w| w[1] != w[0] + 1), "{name}: the path should not be contiguous");
        let keep: Vec<usize> = (0..=root).chain(kept).collect();
        exec.compact_kv(&keep).unwrap();
        let next = root + 1 + path.len();
        for (i, &t) in tokens.iter().enumerate().skip(next) {
            let row = step(&mut exec, &[t], i as i64);
            assert_bits_eq(&row, &decoded[i - prefill], &format!("{name}: decoding position {i} after compaction"));
        }
    }
}

/// Prompts for a model: for the default model, Python code that repeats itself (so drafts get accepted),
/// for the fixtures a repeated id pattern and a prompt with its greedy continuation repeated.
fn prompts(name: &str, path: &Path, exec: &mut CpuExecutor, vocab: usize) -> Vec<Vec<u32>> {
    if name == "default" {
        let json = std::fs::read_to_string(path.join("tokenizer.json")).unwrap();
        let tok = TextTokenizer::from_json(&json).unwrap();
        let code = [
            "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
            "for i in range(10):\n    print(i)\nfor j in range(10):\n    print(j)\nfor k in range(",
            "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\nclass Size:\n",
        ];
        return code.iter().map(|c| tok.encode(c, false).unwrap()).collect();
    }
    let v = vocab as u32;
    let pattern: Vec<u32> = (0..9u32).map(|i| (i * 29 + 5) % v).collect();
    let seed = vec![7 % v, 100 % v, 3 % v];
    let cont = generate(exec, &seed, &greedy(12)).unwrap().tokens;
    vec![pattern.repeat(3), [seed.clone(), cont.clone(), seed, cont[..4].to_vec()].concat(), vec![1, 2, 3]]
}

fn greedy(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig { max_new_tokens, sampling: Sampling::Greedy, stop_tokens: vec![] }
}

#[test]
fn greedy_speculative_decoding_emits_the_plain_greedy_tokens_for_every_drafter() {
    let all = models();
    for (i, (name, path)) in all.iter().enumerate() {
        let (mut exec, vocab) = executor(path);
        // The draft model: the default model drafts for itself; a fixture is drafted by the next fixture
        // (a different model with the same 256-token vocabulary, so drafts are often wrong).
        let draft_path = if name == "default" { path.clone() } else { all[1 + i % (all.len() - 1)].1.clone() };
        let mut drafters: Vec<(String, Box<dyn Drafter>)> = vec![
            ("ngram".into(), Box::new(NgramDrafter::new(NgramConfig::default()).unwrap())),
            (
                "ngram tree".into(),
                Box::new(NgramDrafter::new(NgramConfig { branches: 3, ..NgramConfig::default() }).unwrap()),
            ),
            ("draft model".into(), Box::new(ModelDrafter::new(executor(&draft_path).0, 5, 1).unwrap())),
            ("draft model tree".into(), Box::new(ModelDrafter::new(executor(&draft_path).0, 4, 3).unwrap())),
        ];
        for prompt in prompts(name, path, &mut exec, vocab) {
            let config = greedy(64);
            let plain = generate(&mut exec, &prompt, &config).unwrap();
            assert_eq!(plain.tokens.len(), 64);
            for (drafter_name, drafter) in &mut drafters {
                let spec = generate_speculative(&mut exec, drafter.as_mut(), &prompt, &config).unwrap();
                let what = format!("{name}, {drafter_name}, prompt {:?}..", &prompt[..prompt.len().min(4)]);
                assert_eq!(spec.tokens, plain.tokens, "{what}: speculative tokens differ from plain greedy");
                assert!(spec.stats.steps <= plain.stats.steps, "{what}: more steps than plain decoding");
                if name == "default" {
                    // The default model copies from its context; every drafter gets well past one token.
                    assert!(spec.stats.accepted_per_step() > 1.3, "{what}: {:?}", spec.stats);
                }
            }
        }
    }
}

/// A copy of the Hugging Face model at `path` that keeps only its first `layers` decoder layers (the
/// embeddings, final norm and head unchanged), as tools/make_draft_model.py writes it: the draft model the
/// benchmark uses. The weights file is copied whole; the importer takes only the tensors the graph names.
fn first_layers(path: &Path, layers: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-draft-{}-{layers}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("config.json")).unwrap()).unwrap();
    assert!(config["num_hidden_layers"].as_u64().unwrap() > layers, "{}: too few layers", path.display());
    config["num_hidden_layers"] = layers.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for file in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        if path.join(file).exists() {
            std::fs::copy(path.join(file), dir.join(file)).unwrap();
        }
    }
    dir
}

/// The benchmark's own prompts for the default model (the first two of each set of
/// tools/bench_speculative.py, stored by its `--write-prompts`): greedy speculative decoding with every
/// drafter the benchmark runs — n-gram chains, n-gram token trees, and a draft model made of the target's
/// first two layers — emits exactly the tokens of plain greedy decoding.
#[test]
fn benchmark_prompts_decode_identically_with_every_drafter() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speculative/prompts.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let target = repo().join("models/default");
    let (mut exec, _) = executor(&target);
    let draft = first_layers(&target, 2);
    let mut drafters: Vec<(&str, Box<dyn Drafter>)> = vec![
        ("ngram", Box::new(NgramDrafter::new(NgramConfig { draft_len: 16, ..NgramConfig::default() }).unwrap())),
        (
            "tree",
            Box::new(NgramDrafter::new(NgramConfig { draft_len: 16, branches: 3, ..NgramConfig::default() }).unwrap()),
        ),
        ("draft model", Box::new(ModelDrafter::new(executor(&draft).0, 8, 1).unwrap())),
    ];
    let sets = fixture["models"]["default"].as_object().expect("prompts of the default model");
    let mut runs = 0;
    for (set, prompts) in sets {
        for (i, prompt) in prompts.as_array().unwrap().iter().enumerate() {
            let prompt: Vec<u32> = prompt.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
            let config = greedy(96);
            let plain = generate(&mut exec, &prompt, &config).unwrap();
            for (name, drafter) in &mut drafters {
                let spec = generate_speculative(&mut exec, drafter.as_mut(), &prompt, &config).unwrap();
                assert_eq!(spec.tokens, plain.tokens, "{set} prompt {i}, {name}: speculative tokens differ from plain");
                runs += 1;
            }
        }
    }
    std::fs::remove_dir_all(&draft).unwrap();
    assert_eq!(runs, 3 * 2 * 3, "every set, prompt and drafter");
}

/// The cost of a verification step of k rows against a one-token decode step, per model (the default
/// model and, where it is cached, SmolLM2-135M): run with
/// `cargo test --release -p kiln-tests --test speculative_decoding step_cost -- --ignored --nocapture`.
/// Not a pass/fail test: it prints medians of interleaved timings so that kernel changes can be compared.
#[test]
#[ignore = "a timing measurement, run by hand in release mode"]
fn step_cost_by_rows() {
    // KILN_STEP_MODELS (default,smollm2), KILN_STEP_ROWS (1,2,4,8,12,16) and KILN_STEP_CONTEXT (256)
    // narrow or change the measurement, for a profiler.
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let wanted = env("KILN_STEP_MODELS", "default,smollm2");
    let rows: Vec<usize> = env("KILN_STEP_ROWS", "1,2,4,8,12,16").split(',').map(|r| r.parse().unwrap()).collect();
    let context_len: u32 = env("KILN_STEP_CONTEXT", "256").parse().unwrap();
    let mut all = vec![("default".to_string(), repo().join("models/default"))];
    let smollm2 = kiln_tests::reference_outputs::model_cache().join("smollm2/hf");
    if smollm2.exists() {
        all.push(("smollm2".to_string(), smollm2));
    }
    all.retain(|(name, _)| wanted.split(',').any(|w| w == name));
    for (name, path) in all {
        let (mut exec, vocab) = executor(&path);
        let context: Vec<u32> = (0..context_len).map(|i| (i * 37 + 11) % vocab as u32).collect();
        step(&mut exec, &context, 0);
        let past = context.len();
        let reps = if name == "default" { 60 } else { 12 };
        let mut times = vec![Vec::new(); rows.len()];
        let mut cpu_times = vec![Vec::new(); rows.len()];
        for _ in 0..reps {
            for (i, &k) in rows.iter().enumerate() {
                let ids: Vec<u32> = (0..k as u32).map(|j| (j * 13 + 5) % vocab as u32).collect();
                let (start, cpu) = (std::time::Instant::now(), cpu_seconds());
                step(&mut exec, &ids, past as i64);
                times[i].push(start.elapsed().as_secs_f64());
                cpu_times[i].push(cpu_seconds() - cpu);
                exec.truncate_kv(past).unwrap();
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let medians: Vec<f64> = times.iter_mut().map(median).collect();
        let cpu: Vec<f64> = cpu_times.iter_mut().map(median).collect();
        for ((k, m), c) in rows.iter().zip(&medians).zip(&cpu) {
            eprintln!(
                "{name}: {k:>2} rows: wall {:>7.2} ms = {:.2}x a 1-row step; CPU {:>7.2} ms = {:.2}x",
                m * 1e3,
                m / medians[0],
                c * 1e3,
                c / cpu[0]
            );
        }
    }
}

/// CPU seconds used so far by all threads of this process (Linux: /proc/self/task/*/schedstat), which
/// unlike wall time does not count the time other processes take from a busy machine.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 * 1e-9
}
