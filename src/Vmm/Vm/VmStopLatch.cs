using Vmm.Devices;

namespace Vmm.Vm;

/// <summary>Holds why the VM stops: the first request wins, later ones are ignored. Its token is cancelled
/// at that moment, so whatever works on the VM from outside (a migration, a snapshot) can end at once with a
/// clear error instead of working on a VM that is going away. Devices ask through <see cref="IMachineStop"/>.</summary>
internal sealed class VmStopLatch : IMachineStop, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private VmStop? _reason;

    public VmStop? Reason => Volatile.Read(ref _reason);
    public CancellationToken Token => _stopping.Token;

    /// <summary>Returns false when the VM was already stopping.</summary>
    public bool Request(VmStop stop)
    {
        if (Interlocked.CompareExchange(ref _reason, stop, null) is not null) return false;
        _stopping.Cancel();
        return true;
    }

    public void RequestGuestReset(string how) => Request(VmStop.Reset(how));
    public void RequestGuestExit(uint exitPortValue) => Request(VmStop.ExitPort(exitPortValue));

    public void Dispose() => _stopping.Dispose();
}
