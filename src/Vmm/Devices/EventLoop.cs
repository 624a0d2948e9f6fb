using Vmm.Kvm;
using Vmm.Kvm.Interop;

namespace Vmm.Devices;

/// <summary>The device thread: one epoll over eventfds (virtqueue kicks from ioeventfd, TAP readiness),
/// each with a handler run on this thread, so devices need no locks against each other. A handler
/// that throws stops the loop and is reported through <paramref name="onHandlerFailure"/>.</summary>
public sealed class EventLoop(Action<Exception> onHandlerFailure) : IDisposable
{
    private readonly Epoll _epoll = new();
    private readonly EventFd _stop = new();
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
        _epoll.Add(_stop.Number, 0);
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
                int count = _epoll.Wait(events, -1);
                for (int i = 0; i < count && !_stopping; i++)
                {
                    ulong token = events[i].Data;
                    if (token == 0) return;
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

    public void Stop()
    {
        if (_thread is null || _stopping) return;
        _stopping = true;
        _stop.Signal();
        if (Thread.CurrentThread != _thread) _thread.Join();
    }

    public void Dispose()
    {
        Stop();
        _epoll.Dispose();
        _stop.Dispose();
    }
}
