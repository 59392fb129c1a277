//! The virtio-pci common configuration structure (virtio 1.2, 4.1.4.3): feature negotiation,
//! device status and per-queue set-up, as plain state. The transport acts on what changed.

use crate::log_limited;

/// `queue_msix_vector` / `config_msix_vector` value meaning "no vector".
pub const NO_VECTOR: u16 = 0xffff;
/// Size of the structure as laid out in the BAR (through `queue_reset`).
pub const COMMON_CFG_LEN: u64 = 0x3c;

pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u8 = 0x40;

/// What the driver set up for one queue; turned into a `virtio_queue::Queue` at DRIVER_OK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub enabled: bool,
    pub msix_vector: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            enabled: false,
            msix_vector: NO_VECTOR,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// A write the transport must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum CommonWrite {
    /// Nothing beyond the register itself.
    None,
    /// The driver wrote `device_status`.
    Status(u8),
    /// A vector assignment changed (queue or config).
    Vectors,
}

#[derive(Debug)]
pub struct CommonConfig {
    pub device_features: u64,
    pub driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    pub config_msix_vector: u16,
    pub status: u8,
    pub config_generation: u8,
    queue_select: u16,
    pub queues: Vec<QueueConfig>,
}

impl CommonConfig {
    pub fn new(device_features: u64, queue_max_sizes: &[u16]) -> Self {
        CommonConfig {
            device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            config_msix_vector: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes
                .iter()
                .map(|&m| QueueConfig::new(m))
                .collect(),
        }
    }

    /// Back to the state after power-on (the driver wrote 0 to `device_status`).
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = CommonConfig::new(self.device_features, &sizes);
    }

    fn selected(&self) -> Option<&QueueConfig> {
        self.queues.get(self.queue_select as usize)
    }

    /// Queue registers may change only before DRIVER_OK.
    fn selected_mut(&mut self) -> Option<&mut QueueConfig> {
        if self.status & STATUS_DRIVER_OK != 0 {
            log_limited!(
                log::Level::Warn,
                "virtio-pci: queue set-up after DRIVER_OK ignored"
            );
            return None;
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let q = self.selected();
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select.into(),
            (0x04, 4) => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            (0x08, 4) => self.driver_feature_select.into(),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => self.config_msix_vector.into(),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => self.status.into(),
            (0x15, 1) => self.config_generation.into(),
            (0x16, 2) => self.queue_select.into(),
            (0x18, 2) => q.map_or(0, |q| q.size.into()),
            (0x1a, 2) => q.map_or(NO_VECTOR, |q| q.msix_vector).into(),
            (0x1c, 2) => q.map_or(0, |q| q.enabled.into()),
            // Queue i is notified at notify_off i (times the multiplier).
            (0x1e, 2) => self.queue_select.into(),
            (0x20, 4) | (0x20, 8) => q.map_or(0, |q| q.desc),
            (0x24, 4) => q.map_or(0, |q| q.desc >> 32),
            (0x28, 4) | (0x28, 8) => q.map_or(0, |q| q.avail),
            (0x2c, 4) => q.map_or(0, |q| q.avail >> 32),
            (0x30, 4) | (0x30, 8) => q.map_or(0, |q| q.used),
            (0x34, 4) => q.map_or(0, |q| q.used >> 32),
            _ => {
                log_limited!(
                    log::Level::Warn,
                    "virtio-pci: common config read at {offset:#x} width {} ignored",
                    data.len()
                );
                0
            }
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonWrite {
        let mut buf = [0u8; 8];
        let n = data.len().min(8);
        buf[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(buf);
        let set_lo = |old: u64| (old & !0xffff_ffff) | (v & 0xffff_ffff);
        let set_hi = |old: u64| (old & 0xffff_ffff) | (v << 32);
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v as u32,
            (0x08, 4) => self.driver_feature_select = v as u32,
            (0x0c, 4) => {
                if self.status & STATUS_FEATURES_OK != 0 {
                    log_limited!(
                        log::Level::Warn,
                        "virtio-pci: features after FEATURES_OK ignored"
                    );
                    return CommonWrite::None;
                }
                match self.driver_feature_select {
                    0 => self.driver_features = set_lo(self.driver_features),
                    1 => self.driver_features = set_hi(self.driver_features),
                    _ => {}
                }
            }
            (0x10, 2) => {
                self.config_msix_vector = v as u16;
                return CommonWrite::Vectors;
            }
            (0x14, 1) => return CommonWrite::Status(v as u8),
            (0x16, 2) => self.queue_select = v as u16,
            (0x18, 2) => {
                if let Some(q) = self.selected_mut() {
                    q.size = v as u16;
                }
            }
            (0x1a, 2) => {
                if let Some(q) = self.queues.get_mut(self.queue_select as usize) {
                    q.msix_vector = v as u16;
                    return CommonWrite::Vectors;
                }
            }
            (0x1c, 2) => {
                if let Some(q) = self.selected_mut() {
                    // Writing 0 is not allowed (queue_reset exists for that); ignore it.
                    if v == 1 {
                        q.enabled = true;
                    }
                }
            }
            (0x20, 4)
            | (0x20, 8)
            | (0x24, 4)
            | (0x28, 4)
            | (0x28, 8)
            | (0x2c, 4)
            | (0x30, 4)
            | (0x30, 8)
            | (0x34, 4) => {
                let wide = data.len() == 8;
                if let Some(q) = self.selected_mut() {
                    let field = match offset & !7 {
                        0x20 => &mut q.desc,
                        0x28 => &mut q.avail,
                        _ => &mut q.used,
                    };
                    *field = if wide {
                        v
                    } else if offset & 4 == 0 {
                        set_lo(*field)
                    } else {
                        set_hi(*field)
                    };
                }
            }
            _ => log_limited!(
                log::Level::Warn,
                "virtio-pci: common config write at {offset:#x} width {} ignored",
                data.len()
            ),
        }
        CommonWrite::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &CommonConfig, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        c.read(offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn features_are_read_and_written_in_32_bit_halves() {
        let mut c = CommonConfig::new(0x1_0000_0003, &[256]);
        assert_eq!(read(&c, 0x04, 4), 3);
        c.write(0x00, &1u32.to_le_bytes());
        assert_eq!(read(&c, 0x04, 4), 1);
        c.write(0x08, &1u32.to_le_bytes());
        c.write(0x0c, &1u32.to_le_bytes());
        assert_eq!(c.driver_features, 1 << 32);
    }

    #[test]
    fn queue_addresses_accept_split_and_whole_writes() {
        let mut c = CommonConfig::new(0, &[256, 128]);
        c.write(0x16, &1u16.to_le_bytes());
        assert_eq!(read(&c, 0x18, 2), 128);
        c.write(0x20, &0x1000u32.to_le_bytes());
        c.write(0x24, &0x2u32.to_le_bytes());
        c.write(0x28, &0x3_0000_2000u64.to_le_bytes());
        assert_eq!(c.queues[1].desc, 0x2_0000_1000);
        assert_eq!(c.queues[1].avail, 0x3_0000_2000);
        assert_eq!(read(&c, 0x24, 4), 2);
        assert_eq!(c.queues[0].desc, 0);
    }

    #[test]
    fn out_of_range_queue_select_and_odd_widths_are_harmless() {
        let mut c = CommonConfig::new(0, &[256]);
        c.write(0x16, &9u16.to_le_bytes());
        assert_eq!(read(&c, 0x18, 2), 0);
        assert_eq!(read(&c, 0x1a, 2), u64::from(NO_VECTOR));
        c.write(0x18, &64u16.to_le_bytes());
        c.write(0x1c, &1u16.to_le_bytes());
        c.write(0x14, &[1, 2, 3]);
        c.write(0x100, &[1]);
        assert_eq!(read(&c, 0x04, 2), 0, "wrong width reads 0");
        assert_eq!(c.queues[0].size, 256);
        assert!(!c.queues[0].enabled);
    }

    #[test]
    fn queue_set_up_is_frozen_after_driver_ok_and_features_after_features_ok() {
        let mut c = CommonConfig::new(3, &[256]);
        c.status = STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        c.write(0x0c, &1u32.to_le_bytes());
        c.write(0x18, &16u16.to_le_bytes());
        c.write(0x20, &0x1000u32.to_le_bytes());
        assert_eq!(c.driver_features, 0);
        assert_eq!(c.queues[0].size, 256);
        assert_eq!(c.queues[0].desc, 0);
        assert_eq!(c.write(0x14, &[0]), CommonWrite::Status(0));
    }
}
