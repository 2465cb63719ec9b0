//! A hand-written encoder for the few fields of `xla.CompileOptionsProto` that ti-xla sets.
//! Empty options abort some plugins (`replica_count > 0` CHECK), so replicas and partitions are
//! always written.

/// How a program is laid out over devices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    pub num_replicas: usize,
    pub num_partitions: usize,
    pub use_spmd_partitioning: bool,
    /// `device_assignment[replica][partition]` = global device id; `None` lets the plugin choose.
    pub device_assignment: Option<Vec<Vec<i64>>>,
}

impl CompileOptions {
    /// One replica per device, data parallel (`all_reduce` over replicas), on devices 0..n.
    pub fn replicated(num_devices: usize) -> Self {
        Self::replicated_on(&(0..num_devices as i64).collect::<Vec<_>>())
    }

    /// One replica on each of the given global device ids.
    pub fn replicated_on(device_ids: &[i64]) -> Self {
        CompileOptions {
            num_replicas: device_ids.len(),
            num_partitions: 1,
            use_spmd_partitioning: false,
            device_assignment: Some(device_ids.iter().map(|&d| vec![d]).collect()),
        }
    }

    /// One SPMD program partitioned over devices 0..n (shardings come from `mhlo.sharding`).
    pub fn spmd(num_devices: usize) -> Self {
        CompileOptions {
            num_replicas: 1,
            num_partitions: num_devices,
            use_spmd_partitioning: true,
            device_assignment: Some(vec![(0..num_devices as i64).collect()]),
        }
    }

    /// Devices that run the program, in the order argument lists must be given.
    pub fn num_devices(&self) -> usize {
        self.num_replicas * self.num_partitions
    }

    /// The serialized `CompileOptionsProto`.
    pub fn encode(&self) -> Vec<u8> {
        let mut build = Vec::new();
        // ExecutableBuildOptionsProto: device_ordinal = 1, num_replicas = 4,
        // num_partitions = 5, use_spmd_partitioning = 6, device_assignment = 9.
        put_int(&mut build, 1, -1);
        put_int(&mut build, 4, self.num_replicas as i64);
        put_int(&mut build, 5, self.num_partitions as i64);
        if self.use_spmd_partitioning {
            put_int(&mut build, 6, 1);
        }
        if let Some(assignment) = &self.device_assignment {
            // DeviceAssignmentProto: replica_count = 1, computation_count = 2,
            // repeated ComputationDevice computation_devices = 3 { packed replica_device_ids = 1 }.
            let mut da = Vec::new();
            put_int(&mut da, 1, self.num_replicas as i64);
            put_int(&mut da, 2, self.num_partitions as i64);
            for partition in 0..self.num_partitions {
                let mut ids = Vec::new();
                for replica in assignment {
                    put_varint(
                        &mut ids,
                        replica.get(partition).copied().unwrap_or(0) as u64,
                    );
                }
                let mut cd = Vec::new();
                put_bytes(&mut cd, 1, &ids);
                put_bytes(&mut da, 3, &cd);
            }
            put_bytes(&mut build, 9, &da);
        }
        let mut out = Vec::new();
        // CompileOptionsProto.executable_build_options = 3.
        put_bytes(&mut out, 3, &build);
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_varint(out, (field as u64) << 3);
    // Negative int64 values are ten-byte two's-complement varints in proto3.
    put_varint(out, v as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, ((field as u64) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_options_match_the_known_encoding() {
        // PJRT.md: the smallest options a plugin accepts are `1a 04 20 01 28 01`.
        let opts = CompileOptions {
            num_replicas: 1,
            num_partitions: 1,
            use_spmd_partitioning: false,
            device_assignment: None,
        };
        let mut expected = vec![0x1a, 0x0f, 0x08];
        expected.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        expected.extend([0x20, 0x01, 0x28, 0x01]);
        assert_eq!(opts.encode(), expected);
    }

    #[test]
    fn device_assignment_is_one_computation_per_partition() {
        let e = CompileOptions::replicated(2).encode();
        // ... 4a (field 9) len, 08 02 (replicas) 10 01 (computations) 1a 04 (device) 0a 02 00 01
        let tail = [
            0x4a, 0x0a, 0x08, 0x02, 0x10, 0x01, 0x1a, 0x04, 0x0a, 0x02, 0x00, 0x01,
        ];
        assert!(e.ends_with(&tail), "{e:02x?}");
    }
}
