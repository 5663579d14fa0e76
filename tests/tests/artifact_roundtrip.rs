//! `.kiln` artifacts round-trip: what the writer stores is what the loader hands back (graph, weights in
//! every storage format, metadata, kernels), an artifact computes exactly what the model it came from
//! computes, and `kiln::Build` skips work when its inputs and options are unchanged.

use std::path::{Path, PathBuf};

use kiln::artifact_writer::{ArtifactContents, write_artifact};
use kiln::{Build, BuildOutcome, CompileOptions, Progress};
use kiln_ir::artifact::{CompiledKernel, KernelTarget, PipelineRecord, Target};
use kiln_ir::{DType, Model, Op, WeightPayload};
use kiln_passes::PassContext;
use kiln_runtime::decoding::{DecoderExecutor, GenerateConfig, Sampling, generate};
use kiln_runtime::{Artifact, CpuExecutor};

fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default")
}

/// The default model imported and put through the default pipeline, as `kiln run MODEL` runs it.
fn prepared_default() -> Model {
    let mut m = kiln::load_model(&default_model_dir(), None).unwrap();
    let mut pm = kiln_passes::pipelines::pipeline("default").unwrap();
    pm.run(&mut m.graph, &mut PassContext::with_weights(&m.weights)).unwrap();
    m
}

/// Logits of every position of `prompt`, bit for bit.
fn logits(exec: &mut dyn DecoderExecutor, prompt: &[u32]) -> Vec<u32> {
    exec.reset();
    let positions: Vec<i64> = (0..prompt.len() as i64).collect();
    let (l, _) = exec.step(prompt, &positions, None).unwrap();
    l.iter().map(|x| x.to_bits()).collect()
}

const PROMPT: [u32; 6] = [1, 267, 489, 1554, 12, 99];

#[test]
fn the_default_model_compiles_into_an_artifact_that_computes_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("default.kiln");
    let summary = kiln::compile(&default_model_dir(), &out, &CompileOptions::default(), &Progress::hidden()).unwrap();
    assert_eq!(summary.artifact.bytes, std::fs::metadata(&out).unwrap().len());

    let model = prepared_default();
    let artifact = Artifact::load(&out).unwrap();
    assert_eq!(artifact.content_hash(), summary.content_hash);
    assert_eq!(kiln_ir::text::print(artifact.graph()), kiln_ir::text::print(&model.graph));
    assert_eq!(artifact.meta(), &model.meta);
    assert_eq!(artifact.targets(), &[Target::Cpu]);
    assert_eq!(artifact.pipeline().passes, ["shape-inference", "constant-folding", "cse", "dce"]);
    assert_eq!(artifact.kernels().count(), 0);
    assert_eq!(artifact.record().parameters, 3_410_176);
    for (name, w) in model.weights.iter() {
        let stored = artifact.weights().get(name).unwrap();
        assert_eq!(stored.ty, w.ty, "{name}");
        let (WeightPayload::Dense(a), WeightPayload::Dense(b)) = (&stored.payload, &w.payload) else { panic!() };
        assert_eq!(a.as_slice(), b.as_slice(), "{name}");
    }

    let mut from_model = CpuExecutor::new(model.graph.clone(), model.weights.clone()).unwrap();
    let mut from_artifact = kiln_runtime::Model::load(&out).unwrap();
    assert_eq!(logits(&mut from_model, &PROMPT), logits(from_artifact.executor_mut(), &PROMPT));
    let config = GenerateConfig { max_new_tokens: 20, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let a = generate(&mut from_model, &PROMPT, &config).unwrap();
    let b = from_artifact.generate_ids(&PROMPT, &config).unwrap();
    assert_eq!(a.tokens, b.tokens);
    // Text in, text out, through the artifact's own tokenizer.
    let text = from_artifact.generate("def read_config(path):", &from_artifact.greedy(8)).unwrap();
    assert_eq!(text.tokens.len(), 8);
    assert!(!text.text.is_empty());
}

#[test]
fn quantized_weights_round_trip_bit_for_bit() {
    let mut model = prepared_default();
    // Quantize every MLP matrix to 4 bits with zero points and the attention queries to 8 bits.
    let mut retyped = Vec::new();
    let names: Vec<String> = model.weights.iter().map(|(n, _)| n.to_string()).collect();
    let mut weights = kiln_ir::WeightStore::new();
    for name in &names {
        let w = model.weights.get(name).unwrap().clone();
        let dims = w.ty.shape.as_static().unwrap();
        let dtype = if name.contains("mlp") && dims.len() == 2 {
            Some(DType::Q4G { group_size: 32, zero_points: true })
        } else if name.contains("q_proj") {
            Some(DType::Q8C)
        } else {
            None
        };
        match dtype {
            Some(d) => {
                weights.insert_quantized(name, d, dims[0], dims[1], &w.to_tensor().to_f32_vec()).unwrap();
                retyped.push((name.clone(), d));
            }
            None => weights.insert(name, w.ty.clone(), w.payload.clone()).unwrap(),
        }
    }
    assert!(retyped.len() >= 6, "the default model has no MLP/q_proj weights any more: {names:?}");
    let ops: Vec<_> = model.graph.nodes().map(|(id, n)| (id, n.op.clone(), n.outputs[0])).collect();
    for (_, op, out) in ops {
        if let Op::Weight { name } = op
            && let Some((_, d)) = retyped.iter().find(|(n, _)| *n == name)
        {
            let mut ty = model.graph.value_type(out).clone();
            ty.dtype = *d;
            model.graph.set_value_type(out, ty);
        }
    }
    model.weights = weights;
    kiln_ir::verify(&model.graph, Some(&model.weights)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.kiln");
    let kernels = vec![
        CompiledKernel {
            module: "decode_step".into(),
            target: KernelTarget::Ptx,
            bytes: b".version 8.0\n.target sm_90\n".to_vec(),
        },
        CompiledKernel {
            module: "decode_step".into(),
            target: KernelTarget::Cubin { sm: 90 },
            bytes: (0..=255).collect(),
        },
    ];
    let plan = serde_json::json!({"steps": [{"kernel": "decode_step", "grid": [30, 1, 1]}]});
    let contents = ArtifactContents {
        graph: &model.graph,
        weights: &model.weights,
        meta: &model.meta,
        pipeline: PipelineRecord { name: "default".into(), passes: vec![], disabled: vec![] },
        targets: vec![Target::Cpu, Target::Cuda { sm: 90 }],
        kernels: kernels.clone(),
        kernel_plan: plan.clone(),
        content_hash: format!("blake3:{}", "ab".repeat(32)),
    };
    write_artifact(&out, &contents, &Progress::hidden()).unwrap();

    let artifact = Artifact::load(&out).unwrap();
    for (name, d) in &retyped {
        let (a, b) = (artifact.weights().get(name).unwrap(), model.weights.get(name).unwrap());
        assert_eq!(a.ty.dtype, *d);
        let (
            WeightPayload::Quantized { data: ad, scales: as_, zeros: az },
            WeightPayload::Quantized { data: bd, scales: bs, zeros: bz },
        ) = (&a.payload, &b.payload)
        else {
            panic!("{name} is not quantized after loading")
        };
        assert_eq!(ad.as_slice(), bd.as_slice());
        assert_eq!(as_.as_slice(), bs.as_slice());
        assert_eq!(az.as_ref().map(|z| z.as_slice()), bz.as_ref().map(|z| z.as_slice()));
    }
    let loaded: Vec<_> = artifact.kernels().map(|k| (k.module.to_string(), k.target, k.bytes.to_vec())).collect();
    let written: Vec<_> = kernels.iter().map(|k| (k.module.clone(), k.target, k.bytes.clone())).collect();
    assert_eq!(loaded, written);
    assert_eq!(artifact.kernel_plan(), &plan);
    assert_eq!(artifact.targets(), &[Target::Cpu, Target::Cuda { sm: 90 }]);

    let mut a = CpuExecutor::new(model.graph.clone(), model.weights.clone()).unwrap();
    let mut b = CpuExecutor::new(artifact.graph().clone(), artifact.weights().clone()).unwrap();
    assert_eq!(logits(&mut a, &PROMPT), logits(&mut b, &PROMPT));
}

#[test]
fn an_artifact_only_for_cuda_is_refused_on_the_cpu_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cuda.kiln");
    let options = CompileOptions { targets: vec![Target::Cuda { sm: 87 }], ..CompileOptions::default() };
    kiln::compile(&default_model_dir(), &out, &options, &Progress::hidden()).unwrap();
    let e = kiln_runtime::Model::load(&out).unwrap_err().to_string();
    assert!(e.contains("cuda:sm_87") && e.contains("--target cpu"), "{e}");
}

#[test]
fn build_skips_work_when_inputs_and_options_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the default model, so that the test can change an input.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in std::fs::read_dir(default_model_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, model.join(f.file_name().unwrap())).unwrap();
    }
    let out = dir.path().join("m.kiln");
    let build = || Build::new(&model).pipeline("default").target("cpu").cargo_directives(false);

    let first = build().compile_to(&out).unwrap();
    let BuildOutcome::Compiled(summary) = first else { panic!("the first build did nothing") };
    let modified = std::fs::metadata(&out).unwrap().modified().unwrap();
    let second = build().compile_to(&out).unwrap();
    assert_eq!(second, BuildOutcome::UpToDate { content_hash: summary.content_hash.clone() });
    assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), modified, "the artifact was rewritten");

    // Another option, another hash.
    let BuildOutcome::Compiled(o0) = build().pipeline("O0").compile_to(&out).unwrap() else { panic!() };
    assert_ne!(o0.content_hash, summary.content_hash);
    // Back to the first options, but with a changed input file.
    let config = model.join("generation_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n")).unwrap();
    let BuildOutcome::Compiled(changed) = build().compile_to(&out).unwrap() else { panic!() };
    assert_ne!(changed.content_hash, summary.content_hash);
    // A damaged artifact with the right hash is compiled again, not trusted.
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&out, bytes).unwrap();
    assert!(matches!(build().compile_to(&out).unwrap(), BuildOutcome::Compiled(_)));
    // Bad options are errors naming the fix.
    let e = build().target("gpu").compile_to(&out).unwrap_err().to_string();
    assert!(e.contains("cuda:sm_NN"), "{e}");
    let e = build().pipeline("O9").compile_to(&out).unwrap_err().to_string();
    assert!(e.contains("O9") && e.contains("default"), "{e}");
}
