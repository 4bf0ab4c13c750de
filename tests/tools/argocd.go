package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The health statuses Argo CD accepts from a script (gitops-engine's HealthStatusCode); any
// other value becomes Unknown with this message, as in Argo CD.
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

const invalidHealthStatus = "Lua returned an invalid health status"

// argoHealth runs a health script the way Argo CD's util/lua VM.runLua does for a custom
// resource override (UseOpenLibs false): gopher-lua with SkipOpenLibs, then only the package,
// base and table libraries and a "safe" os library holding just os.time and os.date (also
// preloaded for require("os")), a 1 s timeout, the object decoded from its unstructured form
// (integers as int64, as the apiserver returns them) into the global `obj`, and the chunk's
// returned table read as {status, message}.
func argoHealth(script string, raw json.RawMessage) result {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return result{Error: fmt.Sprintf("decoding object: %v", err)}
	}
	r := result{Kind: u.GetKind(), Name: u.GetName()}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true}, lua.LString(pair.n)); err != nil {
			r.Error = fmt.Sprintf("opening %s: %v", pair.n, err)
			return r
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, u.Object))
	if err := l.DoString(script); err != nil {
		r.Error = err.Error()
		return r
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		r.Error = fmt.Sprintf("expect table output from Lua script, not %s", ret.Type().String())
		return r
	}
	status, _ := tbl.RawGetString("status").(lua.LString)
	message, _ := tbl.RawGetString("message").(lua.LString)
	r.Status, r.Message = string(status), string(message)
	if !validHealth[r.Status] {
		r.Status, r.Message = "Unknown", invalidHealthStatus
	}
	return r
}

// safeOs is Argo CD's restricted os library: only time and date (util/lua/oslib_safe.go keeps
// gopher-lua's implementations of these two). Taken from gopher-lua's own os library so the
// functions are the same code.
var safeOsFuncs = []string{"time", "date"}

func safeOsTable(l *lua.LState) *lua.LTable {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Call(0, 1)
	full := scratch.Get(-1).(*lua.LTable)
	t := l.NewTable()
	for _, name := range safeOsFuncs {
		if fn, ok := full.RawGetString(name).(*lua.LFunction); ok && fn.IsG {
			t.RawSetString(name, l.NewFunction(fn.GFunction))
		}
	}
	return t
}

func openSafeOs(l *lua.LState) int {
	t := safeOsTable(l)
	l.SetGlobal(lua.OsLibName, t)
	l.Push(t)
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(safeOsTable(l))
	return 1
}

// decodeValue is Argo CD's conversion of an unstructured object into Lua values.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []interface{}:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}
