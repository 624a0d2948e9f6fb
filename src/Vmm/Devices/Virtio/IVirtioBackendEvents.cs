namespace Vmm.Devices.Virtio;

/// <summary>A device whose backend produces work on its own (a TAP with frames waiting): the event loop
/// watches these descriptors and calls back through the transport, edge-triggered.</summary>
public interface IVirtioBackendEvents
{
    IReadOnlyList<(int Fd, Action OnReadable)> BackendEvents { get; }
}
