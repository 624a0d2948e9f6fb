using Vmm.Devices;
using Vmm.Kvm;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class EventLoopTests : IDisposable
{
    private readonly EventLoop _loop = new(_ => { });
    private readonly EventFd _source = new();
    private int _handled;
    private volatile bool _paused;
    private int _handledWhilePaused;

    public void Dispose()
    {
        _loop.Dispose();
        _source.Dispose();
    }

    private void StartCounting(bool edgeTriggered)
    {
        _loop.Add(_source.Number, () =>
        {
            _source.Drain();
            if (_paused) Interlocked.Increment(ref _handledWhilePaused);
            Interlocked.Increment(ref _handled);
        }, edgeTriggered);
        _loop.Start();
    }

    private bool HandledReaches(int count)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Volatile.Read(ref _handled) < count && DateTime.UtcNow < deadline) Thread.Sleep(5);
        return Volatile.Read(ref _handled) >= count;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EventLoop_WhilePaused_RunsNoHandlerAndDeliversWhatArrivedOnResume(bool edgeTriggered)
    {
        StartCounting(edgeTriggered);
        _source.Signal();
        Assert.True(HandledReaches(1));

        Assert.True(_loop.Pause(TimeSpan.FromSeconds(10)));
        _paused = true;
        _source.Signal();
        // The handler itself notes any run between the pause and the resume: no waiting for something not to happen.
        _paused = false;
        _loop.Resume();

        Assert.True(HandledReaches(2));
        Assert.Equal(0, Volatile.Read(ref _handledWhilePaused));
    }

    [Fact]
    public void EventLoop_PauseGivesUpWhenAHandlerDoesNotFinishInTime()
    {
        using var release = new ManualResetEventSlim();
        using var entered = new ManualResetEventSlim();
        _loop.Add(_source.Number, () =>
        {
            _source.Drain();
            entered.Set();
            release.Wait();
        });
        _loop.Start();
        _source.Signal();
        Assert.True(entered.Wait(TimeSpan.FromSeconds(10)));

        Assert.False(_loop.Pause(TimeSpan.FromMilliseconds(50)));

        release.Set();
        _loop.Resume();
    }

    [Fact]
    public async Task EventLoop_StopWhilePaused_EndsTheLoop()
    {
        StartCounting(edgeTriggered: false);
        Assert.True(_loop.Pause(TimeSpan.FromSeconds(10)));

        await Task.Run(_loop.Stop).WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void EventLoop_AHandlerThatThrows_IsReported()
    {
        Exception? reported = null;
        using var loop = new EventLoop(e => reported = e);
        using var source = new EventFd();
        loop.Add(source.Number, () => throw new InvalidOperationException("device broke"));
        loop.Start();

        source.Signal();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (reported is null && DateTime.UtcNow < deadline) Thread.Sleep(5);

        Assert.Equal("device broke", reported?.Message);
    }
}
