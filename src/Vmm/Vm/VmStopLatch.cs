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

    /// <summary>Returns false when the VM was already stopping, or is gone.</summary>
    public bool Request(VmStop stop)
    {
        if (Interlocked.CompareExchange(ref _reason, stop, null) is not null) return false;
        try
        {
            _stopping.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The VM was torn down before this request arrived (a signal racing a VM's end in a daemon, a vCPU thread
            // outliving a machine disposed under it): there is nothing left to stop, and a late request must not take
            // the process down with an unhandled exception on its thread.
            return false;
        }
        return true;
    }

    public void RequestGuestReset(string how) => Request(VmStop.Reset(how));
    public void RequestGuestExit(uint exitPortValue) => Request(VmStop.ExitPort(exitPortValue));

    public void Dispose() => _stopping.Dispose();
}
