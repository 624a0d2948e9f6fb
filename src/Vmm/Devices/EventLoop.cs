using Vmm.Kvm;
using Vmm.Kvm.Interop;

namespace Vmm.Devices;

/// <summary>The device thread: one epoll over eventfds (virtqueue kicks from ioeventfd, TAP readiness),
/// each with a handler run on this thread, so devices need no locks against each other. A handler
/// that throws stops the loop and is reported through <paramref name="onHandlerFailure"/>. The loop can
/// be paused between batches: events that arrive meanwhile wait in the epoll set until it resumes.</summary>
public sealed class EventLoop(Action<Exception> onHandlerFailure) : IDisposable
{
    private readonly Epoll _epoll = new();
    /// <summary>Wakes the loop out of epoll_wait to stop or to pause.</summary>
    private readonly EventFd _wake = new();
    private readonly object _pauseLock = new();
    private bool _pauseRequested, _parked;
    private readonly List<Action> _handlers = [];
    private readonly object _lock = new();
    private Thread? _thread;
    private volatile bool _stopping;

    /// <summary>Runs <paramref name="onReadable"/> on the loop thread whenever <paramref name="fd"/> is readable.
    /// Edge-triggered sources (<paramref name="edgeTriggered"/>) are reported once per new readiness: their
    /// handler must read until the source is empty, or until it cannot take more and will retry later.</summary>
    public void Add(int fd, Action onReadable, bool edgeTriggered = false)
    {
        lock (_lock)
        {
            _handlers.Add(onReadable);
            _epoll.Add(fd, (ulong)_handlers.Count, Libc.EPOLLIN | (edgeTriggered ? Libc.EPOLLET : 0));
        }
    }

    public void Start()
    {
        _epoll.Add(_wake.Number, 0);
        _thread = new Thread(Run) { Name = "devices", IsBackground = true };
        _thread.Start();
    }

    private void Run()
    {
        Span<EpollEvent> events = stackalloc EpollEvent[32];
        try
        {
            while (!_stopping)
            {
                ParkWhilePaused();
                int count = _epoll.Wait(events, -1);
                // The whole batch is handled before a pause takes effect: an edge-triggered event that
                // epoll has already handed over would otherwise be lost.
                for (int i = 0; i < count && !_stopping; i++)
                {
                    ulong token = events[i].Data;
                    if (token == 0)
                    {
                        _wake.Drain();
                        continue;
                    }
                    Action handler;
                    lock (_lock) handler = _handlers[(int)token - 1];
                    handler();
                }
            }
        }
        catch (Exception e)
        {
            onHandlerFailure(e);
        }
    }

    private void ParkWhilePaused()
    {
        lock (_pauseLock)
        {
            if (!_pauseRequested) return;
            _parked = true;
            Monitor.PulseAll(_pauseLock);
            while (_pauseRequested && !_stopping) Monitor.Wait(_pauseLock);
            _parked = false;
        }
    }

    /// <summary>Returns true once the loop runs no handler and will run none until <see cref="Resume"/>; false
    /// when a handler did not finish within <paramref name="timeout"/> (the pause stays requested: the caller
    /// resumes to give it up).</summary>
    public bool Pause(TimeSpan timeout)
    {
        if (_thread is null || Thread.CurrentThread == _thread) return true;
        lock (_pauseLock) _pauseRequested = true;
        _wake.Signal();
        var waited = System.Diagnostics.Stopwatch.StartNew();
        lock (_pauseLock)
            while (!_parked && !_stopping && _thread.IsAlive)
            {
                if (timeout != Timeout.InfiniteTimeSpan && waited.Elapsed >= timeout) return false;
                Monitor.Wait(_pauseLock, 50);
            }
        return true;
    }

    public void Resume()
    {
        lock (_pauseLock)
        {
            _pauseRequested = false;
            Monitor.PulseAll(_pauseLock);
        }
    }

    public void Stop()
    {
        if (_thread is null || _stopping) return;
        _stopping = true;
        _wake.Signal();
        lock (_pauseLock) Monitor.PulseAll(_pauseLock);
        if (Thread.CurrentThread != _thread) _thread.Join();
    }

    public void Dispose()
    {
        Stop();
        _epoll.Dispose();
        _wake.Dispose();
    }
}
