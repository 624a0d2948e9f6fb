using System.Text;
using Vmm.Devices;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>Places virtio devices on the MMIO bus, one 4 KiB window each from 0xd0000000, each with an
/// ISA interrupt line (irqfd) and one ioeventfd per queue served by the event loop, and writes the
/// <c>virtio_mmio.device=</c> options that tell the guest kernel where they are.</summary>
public sealed class VirtioMmioDevices : IDisposable
{
    public const ulong FirstWindowAddress = 0xd000_0000;

    /// <summary>ISA IRQs no other vmm device uses; lines below 16 reach the PIC as well as the IOAPIC,
    /// so a guest without an MP table still gets them.</summary>
    public static readonly uint[] FreeIrqs = [5, 6, 7, 9, 10, 11, 12, 14, 15];

    private readonly List<IDisposable> _owned = [];
    private readonly List<EventFd> _kicks = [];
    private readonly List<(VirtioMmioTransport Transport, ulong Address, uint Irq)> _devices = [];

    public IReadOnlyList<VirtioMmioTransport> Transports => _devices.Select(d => d.Transport).ToList();

    public void Add(string name, IVirtioDevice device, KvmVm vm, DeviceBus mmio, EventLoop eventLoop, GuestMemory memory, Logger log)
    {
        // Owned first: a device refused below (one too many) still has its image or TAP closed.
        if (device is IDisposable disposable) _owned.Add(disposable);
        if (_devices.Count == FreeIrqs.Length)
            throw new ConfigurationException($"at most {FreeIrqs.Length} virtio devices are supported");
        ulong address = WindowAddress(_devices.Count);
        uint irq = FreeIrqs[_devices.Count];

        var interrupt = Own(new EventFd());
        vm.RegisterIrqfd(interrupt.Number, irq);
        var transport = new VirtioMmioTransport(name, device, memory, new EventFdInterruptLine(interrupt), log, StateNameAt(_devices.Count));
        mmio.Register(address, VirtioMmioTransport.WindowBytes, transport);
        for (int queue = 0; queue < transport.QueueCount; queue++)
        {
            var kick = Own(new EventFd());
            _kicks.Add(kick);
            vm.RegisterIoeventfd(kick.Number, address + VirtioMmioTransport.RegQueueNotify, 4, portIo: false, datamatch: (ulong)queue);
            int index = queue;
            eventLoop.Add(kick.Number, () =>
            {
                kick.Drain();
                transport.Notify(index);
            });
        }
        if (device is IVirtioBackendEvents backend)
            foreach (var (fd, onReadable) in backend.BackendEvents)
            {
                string what = $"{name} backend";
                eventLoop.Add(fd, () => transport.RunDeviceWork(what, onReadable), edgeTriggered: true);
            }
        _devices.Add((transport, address, irq));
        log.Debug($"{name}: virtio-mmio at 0x{address:x}, IRQ {irq}");
    }

    private static ulong WindowAddress(int index) => FirstWindowAddress + (ulong)index * VirtioMmioTransport.WindowBytes;

    /// <summary>The saved state of the <paramref name="index"/>-th device is named by where it sits, which is the
    /// same on every machine built from the same configuration.</summary>
    public static string StateNameAt(int index) => $"virtio-mmio 0x{WindowAddress(index):x}";

    /// <summary>Signals every queue's kick eventfd, as if the driver had kicked: after a restore, requests
    /// made available just before the state was saved are then served.</summary>
    public void KickAllQueues()
    {
        foreach (var kick in _kicks) kick.Signal();
    }

    /// <summary>The kernel options that declare every device (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).</summary>
    public string KernelCommandLine()
    {
        var text = new StringBuilder();
        foreach (var (_, address, irq) in _devices)
            text.Append($" virtio_mmio.device=4K@0x{address:x}:{irq}");
        return text.ToString().Trim();
    }

    private T Own<T>(T disposable) where T : IDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
