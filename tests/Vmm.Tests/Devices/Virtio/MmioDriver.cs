using System.Buffers.Binary;
using Vmm.Devices.Virtio;
using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;
using static Vmm.Devices.Virtio.VirtioMmioTransport;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>Plays Linux's virtio_mmio driver against a transport, through 32-bit register accesses only:
/// the virtio 1.2 initialization sequence (§3.1.1, §4.2.3), queue setup, kicks (a QueueNotify write, which
/// the transport handles like an ioeventfd kick) and the interrupt handler's status read and ACK.
/// Queue <c>i</c>'s rings sit at <see cref="FirstRingAddress"/> + i * <see cref="RingStride"/>, zeroed
/// as vring_create_virtqueue leaves them; buffers belong above <see cref="BufferAddress"/>.</summary>
internal sealed class MmioDriver(VirtioMmioTransport transport, GuestMemory memory)
{
    public const ulong FirstRingAddress = 0x10000;
    /// <summary>Room for a 256-entry queue: descriptors at +0, available ring at +0x1000, used ring at +0x2000.</summary>
    public const ulong RingStride = 0x4000;
    public const ushort MaxRingSize = 256;
    public const ulong BufferAddress = 0x40000;

    public VirtioMmioTransport Transport => transport;

    public uint Read(int register)
    {
        Span<byte> data = stackalloc byte[4];
        transport.Read((ulong)register, data);
        return BinaryPrimitives.ReadUInt32LittleEndian(data);
    }

    public void Write(int register, uint value)
    {
        Span<byte> data = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(data, value);
        transport.Write((ulong)register, data);
    }

    public uint Status => Read(RegStatus);

    public uint InterruptStatus => Read(RegInterruptStatus);

    /// <summary>Both 32-bit banks of DeviceFeatures, selected through DeviceFeaturesSel.</summary>
    public ulong ReadDeviceFeatures()
    {
        Write(RegDeviceFeaturesSel, 1);
        ulong high = Read(RegDeviceFeatures);
        Write(RegDeviceFeaturesSel, 0);
        return (high << 32) | Read(RegDeviceFeatures);
    }

    public void Reset() => Write(RegStatus, 0);

    /// <summary>virtio_add_status: read, OR in the bits, write back.</summary>
    public void AddStatus(uint bits) => Write(RegStatus, Status | bits);

    /// <summary>Reset, ACKNOWLEDGE, DRIVER, read the offered features, write <paramref name="driverFeatures"/>
    /// (exactly those, offered or not) into both banks, set FEATURES_OK and re-read it. Returns whether the
    /// device kept FEATURES_OK, i.e. accepted the features.</summary>
    public bool NegotiateFeatures(ulong driverFeatures)
    {
        Reset();
        AddStatus(StatusAcknowledge);
        AddStatus(StatusDriver);
        ReadDeviceFeatures();
        Write(RegDriverFeaturesSel, 1);
        Write(RegDriverFeatures, (uint)(driverFeatures >> 32));
        Write(RegDriverFeaturesSel, 0);
        Write(RegDriverFeatures, (uint)driverFeatures);
        AddStatus(StatusFeaturesOk);
        return (Status & StatusFeaturesOk) != 0;
    }

    public static ulong DescriptorTableOf(int queue) => FirstRingAddress + (ulong)queue * RingStride;
    public static ulong AvailableRingOf(int queue) => DescriptorTableOf(queue) + 0x1000;
    public static ulong UsedRingOf(int queue) => DescriptorTableOf(queue) + 0x2000;

    /// <summary>Sets up queue <paramref name="index"/> with zeroed rings at its usual place, as
    /// vm_setup_vq does, and returns a driver for them.</summary>
    public SplitRingDriver SetupQueue(int index, ushort size, IEnumerable<ushort>? descriptorOrder = null)
    {
        if (size > MaxRingSize) throw new ArgumentOutOfRangeException(nameof(size), size, $"the test layout holds queues of up to {MaxRingSize} entries");
        ulong descriptors = DescriptorTableOf(index), available = AvailableRingOf(index), used = UsedRingOf(index);
        memory.Fill(descriptors, DescriptorTableBytes(size), 0);
        memory.Fill(available, AvailableRingBytes(size), 0);
        memory.Fill(used, UsedRingBytes(size), 0);
        SetupQueue(index, size, descriptors, available, used);
        return new SplitRingDriver(memory, size, descriptorOrder, descriptors, available, used);
    }

    /// <summary>The register writes of vm_setup_vq, with whatever values the test chooses (a bad setup included).</summary>
    public void SetupQueue(int index, uint size, ulong descriptorTable, ulong availableRing, ulong usedRing)
    {
        Write(RegQueueSel, (uint)index);
        if (Read(RegQueueReady) != 0) throw new InvalidOperationException($"queue {index} is already ready");
        if (Read(RegQueueNumMax) == 0) throw new InvalidOperationException($"queue {index} does not exist");
        Write(RegQueueNum, size);
        Write(RegQueueDescLow, (uint)descriptorTable);
        Write(RegQueueDescHigh, (uint)(descriptorTable >> 32));
        Write(RegQueueDriverLow, (uint)availableRing);
        Write(RegQueueDriverHigh, (uint)(availableRing >> 32));
        Write(RegQueueDeviceLow, (uint)usedRing);
        Write(RegQueueDeviceHigh, (uint)(usedRing >> 32));
        Write(RegQueueReady, 1);
    }

    public void DriverOk() => AddStatus(StatusDriverOk);

    /// <summary>The whole sequence: features, one queue per size given, DRIVER_OK. Throws when the device
    /// refuses the features, as virtio_features_ok fails the probe.</summary>
    public SplitRingDriver[] Initialize(ulong driverFeatures, params ushort[] queueSizes)
    {
        if (!NegotiateFeatures(driverFeatures))
            throw new InvalidOperationException($"the device refused features 0x{driverFeatures:x}");
        var rings = queueSizes.Select((size, index) => SetupQueue(index, size)).ToArray();
        DriverOk();
        return rings;
    }

    public void Kick(int queue) => Write(RegQueueNotify, (uint)queue);

    /// <summary>virtqueue_kick_prepare + notify: kicks only when the device asked for it. With EVENT_IDX
    /// that is when the new buffers (from <paramref name="previousAvailableIndex"/> on) cross avail_event;
    /// without it, unless the device set VRING_USED_F_NO_NOTIFY. Returns whether it kicked.</summary>
    public bool KickIfNeeded(int queue, SplitRingDriver ring, ushort previousAvailableIndex, bool eventIdx)
    {
        bool needed = eventIdx
            ? Virtqueue.NeedsEvent(ring.AvailableEvent, ring.AvailableIndex, previousAvailableIndex)
            : (ring.UsedFlags & UsedFlagNoNotify) == 0;
        if (needed) Kick(queue);
        return needed;
    }

    /// <summary>vm_interrupt: reads InterruptStatus and acknowledges what it found.</summary>
    public uint AcknowledgeInterrupt()
    {
        uint status = InterruptStatus;
        Write(RegInterruptAck, status);
        return status;
    }

    /// <summary>A config field read as vm_get does: one access of the field's width (8 bytes as two 32-bit reads).</summary>
    public byte[] ReadConfig(int offset, int length)
    {
        var data = new byte[length];
        if (length == 8)
        {
            transport.Read((ulong)(ConfigSpace + offset), data.AsSpan(0, 4));
            transport.Read((ulong)(ConfigSpace + offset + 4), data.AsSpan(4, 4));
        }
        else
        {
            transport.Read((ulong)(ConfigSpace + offset), data);
        }
        return data;
    }
}
