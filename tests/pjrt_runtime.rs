//! The PJRT runtime through the real CPU plugin: hand-written StableHLO programs against
//! results computed in Rust, dtype round trips, data parallelism over 4 CPU devices (replica
//! and SPMD styles), the compile cache, and clean errors.

use std::time::Instant;

use half::{bf16, f16};
use ti_xla::pjrt::{CacheOutcome, Client, CompileCache, CompileOptions, PjrtError, Plugin};
use ti_xla::runtime::device::{find_plugin, DeviceKind};
use ti_xla::testing::cpu_client;

/// Deterministic values in [-1, 1) away from zero, so no product or sum is trivially zero.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let v = 2.0 * u - 1.0;
            if v.abs() < 0.05 {
                0.5
            } else {
                v
            }
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / scale;
        assert!(
            err <= rel,
            "{what}[{i}]: got {g}, want {w} (error {err:e} > {rel:e})"
        );
    }
}

fn run1(client: &Client, program: &str, inputs: &[(&[f32], &[i64])]) -> Vec<Vec<f32>> {
    let exe = client
        .compile(program, &CompileOptions::replicated(1))
        .expect("compile");
    let bufs: Vec<_> = inputs
        .iter()
        .map(|(data, dims)| client.buffer_from_host(data, dims, 0).expect("upload"))
        .collect();
    let outs = exe.execute(&[bufs.iter().collect()]).expect("execute");
    outs[0]
        .iter()
        .map(|b| b.to_vec::<f32>().expect("download"))
        .collect()
}

#[test]
fn batched_dot_general_matches_rust() {
    let client = cpu_client(1).unwrap();
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<2x3x4xf32>, %arg1: tensor<2x4x5xf32>) -> tensor<2x3x5xf32> {
    %0 = "stablehlo.dot_general"(%arg0, %arg1) {dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = [0], rhs_batching_dimensions = [0], lhs_contracting_dimensions = [2], rhs_contracting_dimensions = [1]>} : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>
    "func.return"(%0) : (tensor<2x3x5xf32>) -> ()
  }
}"#;
    let (a, b) = (values(24, 1), values(40, 2));
    let t = Instant::now();
    let out = run1(&client, program, &[(&a, &[2, 3, 4]), (&b, &[2, 4, 5])]);
    eprintln!(
        "dot_general: compile+run {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut want = vec![0f64; 30];
    for n in 0..2 {
        for i in 0..3 {
            for j in 0..5 {
                want[n * 15 + i * 5 + j] = (0..4)
                    .map(|k| a[n * 12 + i * 4 + k] as f64 * b[n * 20 + k * 5 + j] as f64)
                    .sum();
            }
        }
    }
    assert_close(&out[0], &want, 1e-6, "dot_general");
}

#[test]
fn strided_nhwc_convolution_matches_rust() {
    let client = cpu_client(1).unwrap();
    // 7x7 input, 3x3 kernel, stride 2, padding 1 -> 4x4.
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<1x7x7x3xf32>, %arg1: tensor<3x3x3x4xf32>) -> tensor<1x4x4x4xf32> {
    %0 = "stablehlo.convolution"(%arg0, %arg1) {batch_group_count = 1 : i64, dimension_numbers = #stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>, feature_group_count = 1 : i64, padding = dense<[[1, 1], [1, 1]]> : tensor<2x2xi64>, window_strides = array<i64: 2, 2>} : (tensor<1x7x7x3xf32>, tensor<3x3x3x4xf32>) -> tensor<1x4x4x4xf32>
    "func.return"(%0) : (tensor<1x4x4x4xf32>) -> ()
  }
}"#;
    let (x, k) = (values(147, 3), values(108, 4));
    let t = Instant::now();
    let out = run1(
        &client,
        program,
        &[(&x, &[1, 7, 7, 3]), (&k, &[3, 3, 3, 4])],
    );
    eprintln!(
        "convolution: compile+run {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut want = vec![0f64; 64];
    for oy in 0..4i64 {
        for ox in 0..4i64 {
            for o in 0..4 {
                let mut acc = 0f64;
                for ky in 0..3i64 {
                    for kx in 0..3i64 {
                        let (iy, ix) = (oy * 2 - 1 + ky, ox * 2 - 1 + kx);
                        if !(0..7).contains(&iy) || !(0..7).contains(&ix) {
                            continue;
                        }
                        for c in 0..3 {
                            let xv = x[((iy * 7 + ix) * 3 + c) as usize] as f64;
                            let kv = k[(((ky * 3 + kx) * 3 + c) * 4 + o) as usize] as f64;
                            acc += xv * kv;
                        }
                    }
                }
                want[((oy * 4 + ox) * 4 + o) as usize] = acc;
            }
        }
    }
    assert_close(&out[0], &want, 1e-6, "convolution");
}

#[test]
fn reduce_sum_and_max_match_rust() {
    let client = cpu_client(1).unwrap();
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<3x5xf32>) -> (tensor<3xf32>, tensor<5xf32>) {
    %z = "stablehlo.constant"() {value = dense<0.000000e+00> : tensor<f32>} : () -> tensor<f32>
    %m = "stablehlo.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32>
    %0 = "stablehlo.reduce"(%arg0, %z) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = "stablehlo.add"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%s) : (tensor<f32>) -> ()
    }) {dimensions = array<i64: 1>} : (tensor<3x5xf32>, tensor<f32>) -> tensor<3xf32>
    %1 = "stablehlo.reduce"(%arg0, %m) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = "stablehlo.maximum"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%s) : (tensor<f32>) -> ()
    }) {dimensions = array<i64: 0>} : (tensor<3x5xf32>, tensor<f32>) -> tensor<5xf32>
    "func.return"(%0, %1) : (tensor<3xf32>, tensor<5xf32>) -> ()
  }
}"#;
    let x = values(15, 5);
    let out = run1(&client, program, &[(&x, &[3, 5])]);
    let sums: Vec<f64> = (0..3)
        .map(|r| (0..5).map(|c| x[r * 5 + c] as f64).sum())
        .collect();
    let maxes: Vec<f64> = (0..5)
        .map(|c| (0..3).map(|r| x[r * 5 + c] as f64).fold(f64::MIN, f64::max))
        .collect();
    assert_close(&out[0], &sums, 1e-6, "reduce sum");
    assert_close(&out[1], &maxes, 0.0, "reduce max");
}

#[test]
fn every_dtype_round_trips_exactly() {
    let client = cpu_client(1).unwrap();
    macro_rules! round_trip {
        ($t:ty, $vals:expr) => {{
            let v: Vec<$t> = $vals;
            let b = client.buffer_from_host(&v, &[v.len() as i64], 0).unwrap();
            assert_eq!(b.dtype(), <$t as ti_xla::pjrt::HostElement>::DTYPE);
            assert_eq!(b.to_vec::<$t>().unwrap(), v, stringify!($t));
        }};
    }
    let floats = [1.5f32, -2.25, 3.0e4, 6.103_515_6e-5, -0.0, 0.1];
    round_trip!(bf16, floats.iter().map(|&f| bf16::from_f32(f)).collect());
    round_trip!(f16, floats.iter().map(|&f| f16::from_f32(f)).collect());
    round_trip!(f32, floats.to_vec());
    round_trip!(f64, vec![1.0 / 3.0, -1e300, 2.5e-310]);
    round_trip!(i32, vec![i32::MIN, -1, 7, i32::MAX]);
    round_trip!(i64, vec![i64::MIN, -1, 7, i64::MAX]);
    round_trip!(u32, vec![0, 1, 0xdead_beef, u32::MAX]);
    round_trip!(u8, vec![0, 1, 128, 255]);
    round_trip!(bool, vec![true, false, true]);

    // The device must read bf16/f16 bits as those types, not just store the bytes.
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<6xbf16>, %arg1: tensor<6xf16>) -> (tensor<6xf32>, tensor<6xf32>) {
    %0 = "stablehlo.convert"(%arg0) : (tensor<6xbf16>) -> tensor<6xf32>
    %1 = "stablehlo.convert"(%arg1) : (tensor<6xf16>) -> tensor<6xf32>
    "func.return"(%0, %1) : (tensor<6xf32>, tensor<6xf32>) -> ()
  }
}"#;
    let exe = client
        .compile(program, &CompileOptions::replicated(1))
        .unwrap();
    let hb: Vec<bf16> = floats.iter().map(|&f| bf16::from_f32(f)).collect();
    let hh: Vec<f16> = floats.iter().map(|&f| f16::from_f32(f)).collect();
    let a = client.buffer_from_host(&hb, &[6], 0).unwrap();
    let b = client.buffer_from_host(&hh, &[6], 0).unwrap();
    let out = exe.execute(&[vec![&a, &b]]).unwrap();
    let want_b: Vec<f32> = hb.iter().map(|v| v.to_f32()).collect();
    let want_h: Vec<f32> = hh.iter().map(|v| v.to_f32()).collect();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), want_b);
    assert_eq!(out[0][1].to_vec::<f32>().unwrap(), want_h);
}

/// The gradient of mean((x w - y)^2)/2 over a batch, as a replica program that averages the
/// per-device gradients with an all_reduce (or, for one device, the whole batch at once).
fn gradient_program(devices: usize, batch: usize) -> String {
    let groups = (0..devices)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"module @grad {{
  func.func public @main(%w: tensor<4xf32>, %x: tensor<{b}x4xf32>, %y: tensor<{b}xf32>) -> tensor<4xf32> {{
    %r = "stablehlo.dot_general"(%x, %w) {{dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]>}} : (tensor<{b}x4xf32>, tensor<4xf32>) -> tensor<{b}xf32>
    %e = "stablehlo.subtract"(%r, %y) : (tensor<{b}xf32>, tensor<{b}xf32>) -> tensor<{b}xf32>
    %g = "stablehlo.dot_general"(%e, %x) {{dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [0], rhs_contracting_dimensions = [0]>}} : (tensor<{b}xf32>, tensor<{b}x4xf32>) -> tensor<4xf32>
    %s = "stablehlo.constant"() {{value = dense<{inv_b:.9e}> : tensor<4xf32>}} : () -> tensor<4xf32>
    %l = "stablehlo.multiply"(%g, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %a = "stablehlo.all_reduce"(%l) ({{
    ^bb0(%p: tensor<f32>, %q: tensor<f32>):
      %t = "stablehlo.add"(%p, %q) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%t) : (tensor<f32>) -> ()
    }}) {{replica_groups = dense<[[{groups}]]> : tensor<1x{devices}xi64>}} : (tensor<4xf32>) -> tensor<4xf32>
    %n = "stablehlo.constant"() {{value = dense<{inv_n:.9e}> : tensor<4xf32>}} : () -> tensor<4xf32>
    %m = "stablehlo.multiply"(%a, %n) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    "func.return"(%m) : (tensor<4xf32>) -> ()
  }}
}}"#,
        b = batch,
        inv_b = 1.0 / batch as f64,
        inv_n = 1.0 / devices as f64,
    )
}

/// Runs the gradient program with `w` on every device and the batch `(x, y)` split into
/// `shard` rows per device, and checks every device's result against the full-batch `want`.
fn check_sharded_run(
    client: &Client,
    exe: &ti_xla::pjrt::LoadedExecutable,
    (w, x, y): (&[f32], &[f32], &[f32]),
    shard: usize,
    want: &[f32],
    style: &str,
) {
    let owned: Vec<[_; 3]> = (0..exe.num_devices())
        .map(|d| {
            let rows = d * shard..(d + 1) * shard;
            [
                client.buffer_from_host(w, &[4], d).unwrap(),
                client
                    .buffer_from_host(&x[rows.start * 4..rows.end * 4], &[shard as i64, 4], d)
                    .unwrap(),
                client
                    .buffer_from_host(&y[rows], &[shard as i64], d)
                    .unwrap(),
            ]
        })
        .collect();
    let lists: Vec<Vec<_>> = owned.iter().map(|b| b.iter().collect()).collect();
    let outs = exe.execute(&lists).unwrap();
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    for (d, out) in outs.iter().enumerate() {
        let got = out[0].to_vec::<f32>().unwrap();
        assert_close(&got, &want, 1e-6, &format!("{style} device {d}"));
    }
}

#[test]
fn four_devices_all_reduce_mean_equals_full_batch() {
    let (devices, per_device) = (4usize, 3usize);
    let batch = devices * per_device;
    let (w, x, y) = (values(4, 10), values(batch * 4, 11), values(batch, 12));

    let one = cpu_client(1).unwrap();
    let full = run1(
        &one,
        &gradient_program(1, batch),
        &[(&w, &[4]), (&x, &[batch as i64, 4]), (&y, &[batch as i64])],
    );

    let client = cpu_client(devices).unwrap();
    assert_eq!(client.device_count(), devices);
    let exe = client
        .compile(
            &gradient_program(devices, per_device),
            &CompileOptions::replicated(devices),
        )
        .unwrap();
    check_sharded_run(&client, &exe, (&w, &x, &y), per_device, &full[0], "replica");
}

#[test]
fn four_devices_spmd_equals_full_batch() {
    let (devices, batch) = (4usize, 8usize);
    let shard = batch / devices;
    let (w, x, y) = (values(4, 20), values(batch * 4, 21), values(batch, 22));
    let one = cpu_client(1).unwrap();
    let program = gradient_program(1, batch);
    let full = run1(
        &one,
        &program,
        &[(&w, &[4]), (&x, &[batch as i64, 4]), (&y, &[batch as i64])],
    );

    // The same single-device program, its batch arguments annotated as sharded: XLA inserts
    // the collectives. The all_reduce over one replica is the identity here.
    let ids = (0..devices)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let spmd = program
        .replace(
            "%w: tensor<4xf32>",
            "%w: tensor<4xf32> {mhlo.sharding = \"{replicated}\"}",
        )
        .replace(
            &format!("%x: tensor<{batch}x4xf32>"),
            &format!(
                "%x: tensor<{batch}x4xf32> {{mhlo.sharding = \"{{devices=[{devices},1]{ids}}}\"}}"
            ),
        )
        .replace(
            &format!("%y: tensor<{batch}xf32>"),
            &format!(
                "%y: tensor<{batch}xf32> {{mhlo.sharding = \"{{devices=[{devices}]{ids}}}\"}}"
            ),
        )
        .replace(
            "-> tensor<4xf32> {\n",
            "-> (tensor<4xf32> {mhlo.sharding = \"{replicated}\"}) {\n",
        );
    let client = cpu_client(devices).unwrap();
    let exe = client
        .compile(&spmd, &CompileOptions::spmd(devices))
        .unwrap();
    check_sharded_run(&client, &exe, (&w, &x, &y), shard, &full[0], "spmd");
}

#[test]
fn donated_inputs_are_consumed() {
    let client = cpu_client(1).unwrap();
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<3xf32> {tf.aliasing_output = 0 : i32}, %arg1: tensor<3xf32>) -> tensor<3xf32> {
    %0 = "stablehlo.add"(%arg0, %arg1) : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    "func.return"(%0) : (tensor<3xf32>) -> ()
  }
}"#;
    let exe = client
        .compile(program, &CompileOptions::replicated(1))
        .unwrap();
    let a = client.buffer_from_host(&[1f32, 2., 3.], &[3], 0).unwrap();
    let b = client
        .buffer_from_host(&[0.5f32, 0.25, 0.125], &[3], 0)
        .unwrap();
    let out = exe.execute(&[vec![&a, &b]]).unwrap();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), vec![1.5, 2.25, 3.125]);
    // The donated buffer now backs the output: reading it is a clean error, not a crash.
    assert!(
        a.to_vec::<f32>().is_err(),
        "a donated input must not be readable"
    );
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![0.5, 0.25, 0.125]);
}

/// A program big enough that compiling takes noticeably longer than loading.
fn chain_program(layers: usize) -> String {
    let mut body = String::new();
    let mut prev = "%arg0".to_string();
    for i in 0..layers {
        body.push_str(&format!(
            "    %d{i} = \"stablehlo.dot_general\"({prev}, %arg1) {{dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]>}} : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>\n    %t{i} = \"stablehlo.tanh\"(%d{i}) : (tensor<16x16xf32>) -> tensor<16x16xf32>\n"
        ));
        prev = format!("%t{i}");
    }
    format!(
        "module @chain {{\n  func.func public @main(%arg0: tensor<16x16xf32>, %arg1: tensor<16x16xf32>) -> tensor<16x16xf32> {{\n{body}    \"func.return\"({prev}) : (tensor<16x16xf32>) -> ()\n  }}\n}}\n"
    )
}

#[test]
fn compile_cache_hits_and_recovers_from_corruption() {
    let dir = std::env::temp_dir().join(format!("ti-xla-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut client = cpu_client(1).unwrap();
    client.set_compile_cache(Some(CompileCache::new(&dir)));
    let program = chain_program(200);
    let opts = CompileOptions::replicated(1);
    let (a, b) = (values(256, 30), values(256, 31));
    let run = |exe: &ti_xla::pjrt::LoadedExecutable| {
        let x = client.buffer_from_host(&a, &[16, 16], 0).unwrap();
        let y = client.buffer_from_host(&b, &[16, 16], 0).unwrap();
        exe.execute(&[vec![&x, &y]]).unwrap()[0][0]
            .to_vec::<f32>()
            .unwrap()
    };

    let t = Instant::now();
    let first = client.compile(&program, &opts).unwrap();
    let miss = t.elapsed();
    assert_eq!(first.cache_outcome, CacheOutcome::Miss);
    let t = Instant::now();
    let second = client.compile(&program, &opts).unwrap();
    let hit = t.elapsed();
    assert_eq!(second.cache_outcome, CacheOutcome::Hit);
    eprintln!(
        "compile cache: miss {:.1} ms, hit {:.1} ms, speed-up x{:.1}",
        miss.as_secs_f64() * 1e3,
        hit.as_secs_f64() * 1e3,
        miss.as_secs_f64() / hit.as_secs_f64()
    );
    let reference = run(&first);
    assert_eq!(
        run(&second),
        reference,
        "a cached executable must compute the same bits"
    );

    // Other options or another program are other entries.
    let cache = client.compile_cache().unwrap();
    let entry = cache.entry_path(&client, &program, &opts);
    assert_ne!(entry, cache.entry_path(&client, &chain_program(199), &opts));
    assert!(entry.is_file());

    for corruption in [
        b"garbage".to_vec(),
        std::fs::read(&entry).unwrap()[..100].to_vec(),
    ] {
        std::fs::write(&entry, &corruption).unwrap();
        let again = client.compile(&program, &opts).unwrap();
        assert_eq!(again.cache_outcome, CacheOutcome::Replaced);
        assert_eq!(run(&again), reference);
        assert_eq!(
            client.compile(&program, &opts).unwrap().cache_outcome,
            CacheOutcome::Hit
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_program_reports_line_and_column() {
    let client = cpu_client(1).unwrap();
    let program = "module @m {\n  func.func public @main(%arg0: tensor<3xf32>) -> tensor<3xf32> {\n    %0 = \"stablehlo.add\"(%arg0, %nope) : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>\n    \"func.return\"(%0) : (tensor<3xf32>) -> ()\n  }\n}\n";
    let err = client
        .compile(program, &CompileOptions::replicated(1))
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, PjrtError::Plugin { .. }), "{msg}");
    let has_line_col = msg
        .split(|c: char| !c.is_ascii_digit() && c != ':')
        .any(|s| s.contains(':') && s.split(':').filter(|p| !p.is_empty()).count() >= 2);
    assert!(
        has_line_col && msg.contains("3:"),
        "no line:column in {msg}"
    );
}

#[test]
fn wrong_number_of_argument_lists_is_an_error() {
    let client = cpu_client(2).unwrap();
    let exe = client
        .compile(&gradient_program(2, 1), &CompileOptions::replicated(2))
        .unwrap();
    let w = client.buffer_from_host(&[1f32; 4], &[4], 0).unwrap();
    let x = client.buffer_from_host(&[1f32; 4], &[1, 4], 0).unwrap();
    let y = client.buffer_from_host(&[1f32], &[1], 0).unwrap();
    let err = exe
        .execute(&[vec![&w, &x, &y]])
        .expect_err("one list for two devices");
    assert!(
        err.to_string().contains("2 device(s) but 1 argument list"),
        "{err}"
    );
    let err = client
        .compile(&gradient_program(4, 1), &CompileOptions::replicated(4))
        .err()
        .unwrap();
    assert!(err.to_string().contains("client has 2"), "{err}");
    assert!(
        client.buffer_from_host(&[1f32; 3], &[4], 0).is_err(),
        "size mismatch"
    );
    assert!(
        client.buffer_from_host(&[1f32; 4], &[4], 5).is_err(),
        "no device 5"
    );
}

#[test]
fn non_plugin_and_missing_plugin_are_clean_errors() {
    let dir = std::env::temp_dir().join(format!("ti-xla-fake-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("fake.so");
    std::fs::write(&fake, b"this is not a shared object").unwrap();
    let err = Plugin::load(&fake)
        .err()
        .expect("text file is not a plugin")
        .to_string();
    assert!(
        err.contains("cannot load PJRT plugin") && err.contains("fake.so"),
        "{err}"
    );

    // A real shared object without GetPjrtApi.
    let libc = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/libm.so.6",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|p| p.is_file());
    if let Some(lib) = libc {
        let err = Plugin::load(lib)
            .err()
            .expect("libm is not a plugin")
            .to_string();
        assert!(err.contains("not a PJRT plugin"), "{err}");
    }

    let missing = dir.join("missing.so");
    let err = find_plugin(DeviceKind::Tpu, Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/install-plugin.sh tpu"), "{err}");
    let err = Plugin::load(&missing).err().unwrap().to_string();
    assert!(err.contains("no such file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn buffers_and_executables_outlive_their_client() {
    let client = cpu_client(1).unwrap();
    let program = r#"module @m {
  func.func public @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {
    %0 = "stablehlo.negate"(%arg0) : (tensor<2xf32>) -> tensor<2xf32>
    "func.return"(%0) : (tensor<2xf32>) -> ()
  }
}"#;
    let exe = client
        .compile(program, &CompileOptions::replicated(1))
        .unwrap();
    let input = client.buffer_from_host(&[1.5f32, -2.0], &[2], 0).unwrap();
    // The plugin frees what a client made when the client goes; ours must keep it alive.
    drop(client);
    let out = exe.execute(&[vec![&input]]).unwrap();
    drop(exe);
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), vec![-1.5, 2.0]);
    assert_eq!(input.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
}
